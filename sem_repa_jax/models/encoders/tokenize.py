"""T5 tokenization exactly as CogVideoX's pipeline (`_get_t5_prompt_embeds`) does it.

Prompts are tokenized with the model's T5 tokenizer (transformers' T5TokenizerFast, backed by the
`tokenizers` library), with </s> appended, truncated to max_length and right-padded with <pad> to
max_length (226 for CogVideoX). The encoder then sees all 226 positions with no attention mask.
"""
import os

import numpy as np

COGVIDEOX_MAX_LENGTH = 226


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
