"""Tokenization of the prompts for the project's two text encoders.

T5, exactly as CogVideoX's pipeline (`_get_t5_prompt_embeds`) does it: prompts are tokenized with
the model's T5 tokenizer (transformers' T5TokenizerFast, backed by the `tokenizers` library), with
</s> appended, truncated to max_length and right-padded with <pad> to max_length (226 for
CogVideoX). The encoder then sees all 226 positions with no attention mask.

CLIP, as CLIPProcessor(text=..., padding="max_length", truncation=True) does it for a CLIPModel
folder: <|startoftext|> prompt <|endoftext|>, truncated (keeping <|endoftext|>) and right-padded to
the text tower's max_position_embeddings (77). The openai tokenizers pad with <|endoftext|>
itself; the text tower pools at the first one (encoders/clip_text.py).
"""
import os

import numpy as np

COGVIDEOX_MAX_LENGTH = 226
CLIP_MAX_LENGTH = 77   # CLIP's max_position_embeddings
# What a folder holding a CLIP tokenizer has: tokenizer.json, or the BPE vocab.json + merges.txt.
_CLIP_TOKENIZER_FILES = (("tokenizer.json",), ("vocab.json", "merges.txt"))


def load_t5_tokenizer(path: str):
  """The tokenizer saved in a model folder (e.g. CogVideoX's tokenizer/): spiece.model or tokenizer.json."""
  if not os.path.isdir(path):
    raise FileNotFoundError(f"tokenizer folder {path!r} does not exist (expected e.g. "
                            "CogVideoX's tokenizer/ with spiece.model or tokenizer.json)")
  from transformers import T5TokenizerFast
  try:
    return T5TokenizerFast.from_pretrained(path)
  except (OSError, ValueError, TypeError) as e:
    raise ValueError(f"tokenizer folder {path!r} cannot be loaded as a T5 tokenizer: {e}") from e


def tokenize(tokenizer, prompts, max_length: int = COGVIDEOX_MAX_LENGTH):
  """list of prompts -> (input_ids (B, max_length) int32, mask (B, max_length) bool, truncated list).

  mask marks real tokens (transformers' attention_mask); CogVideoX does not use it. truncated[i]
  tells whether prompt i lost tokens to max_length, which the pipeline warns about.
  """
  prompts = [prompts] if isinstance(prompts, str) else list(prompts)
  out = tokenizer(prompts, padding="max_length", max_length=max_length, truncation=True,
                  add_special_tokens=True, return_tensors="np")
  lengths = [len(ids) for ids in tokenizer(prompts, add_special_tokens=True)["input_ids"]]
  ids = np.asarray(out["input_ids"], np.int32)
  mask = np.asarray(out["attention_mask"]).astype(bool)
  return ids, mask, [n > max_length for n in lengths]


def clip_tokenizer_folder(path: str) -> str:
  """The folder holding the CLIP tokenizer of a model folder: PATH itself or PATH/tokenizer."""
  for folder in (path, os.path.join(path, "tokenizer")):
    if any(all(os.path.isfile(os.path.join(folder, f)) for f in files)
           for files in _CLIP_TOKENIZER_FILES):
      return folder
  raise FileNotFoundError(f"{path}: no CLIP tokenizer files (expected tokenizer.json, or "
                          "vocab.json and merges.txt, in it or in its tokenizer/ subfolder)")


def load_clip_tokenizer(path: str):
  """transformers' CLIP tokenizer saved in a CLIPModel folder (e.g. openai/clip-vit-large-patch14)
  or its tokenizer/ subfolder."""
  folder = clip_tokenizer_folder(path)
  import transformers
  cls = getattr(transformers, "CLIPTokenizerFast", None) or transformers.CLIPTokenizer
  try:
    return cls.from_pretrained(folder)
  except (OSError, ValueError, TypeError) as e:
    raise ValueError(f"tokenizer folder {folder!r} cannot be loaded as a CLIP tokenizer: "
                     f"{e}") from e


def tokenize_clip(tokenizer, prompts, max_length: int = CLIP_MAX_LENGTH):
  """list of prompts -> (input_ids (B, max_length) int32, attention_mask (B, max_length) bool,
  truncated list), as `tokenize` does for T5.

  max_length: the text tower's max_position_embeddings. The causal text tower's end-of-text state
  is the same with or without attention_mask (it sees only the tokens before it).
  """
  return tokenize(tokenizer, prompts, max_length)
