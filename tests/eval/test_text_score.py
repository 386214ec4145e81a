"""SemanticREPA's CLIP text score: CLIPImageProcessor's preprocessing, and the score of a tiny
converted CLIPModel against the same computation in torch (get_image_features of the processed
frames, get_text_features of the tokenized prompt, cosine, mean over frames)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from conversion import clip as clip_conversion
from sem_repa_jax.eval import text_score
from sem_repa_jax.models.encoders import tokenize
from sem_repa_jax.models.pretrained import load_pretrained
from tests import parity
from tests.models.test_clip_text import BPE_VOCAB, TEXT, VISION, write_tokenizer


def pil_processor(size: int):
  """CLIPImageProcessor on its PIL backend (the default one needs torchvision)."""
  cls = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
  return cls(size={"shortest_edge": size}, crop_size={"height": size, "width": size})


@pytest.mark.parametrize("height,width", [(40, 56), (70, 45), (20, 30), (32, 32)])
def test_clip_pixels_match_clip_image_processor(height, width):
  frames = np.random.default_rng(0).integers(0, 256, (2, 3, height, width, 3), dtype=np.uint8)
  got = text_score.clip_pixels(frames, 32)
  want = pil_processor(32)(images=list(frames.reshape(-1, height, width, 3)),
                           return_tensors="np").pixel_values
  err = parity.max_abs_error(got.reshape(-1, 32, 32, 3), want.transpose(0, 2, 3, 1))
  print(f"clip_pixels {height}x{width} max abs error {err:.2e}")
  assert got.shape == (2, 3, 32, 32, 3) and got.dtype == np.float32 and err <= 1e-6
  with pytest.raises(ValueError, match=r"frames: expected \(\.\.\., height, width, 3\) uint8"):
    text_score.clip_pixels(frames.astype(np.float32), 32)


def test_text_score_of_identical_and_opposite_embeddings():
  e = jnp.asarray([[1.0, 2.0, 2.0], [0.0, 3.0, 4.0]])
  frames = jnp.stack([jnp.stack([e[0], -e[0]]), jnp.stack([2 * e[1], 2 * e[1]])])   # (2, 2, 3)
  np.testing.assert_allclose(np.asarray(text_score.text_score(frames, e)), [0.0, 1.0], atol=1e-6)
  with pytest.raises(ValueError, match=r"text_score: expected frame_embeds \(videos, frames"):
    text_score.text_score(frames, e[:1])


def make_tiny_clip_folder(root):
  """A randomized tiny CLIPModel (openai-style: eos_token_id 2, <|endoftext|> the largest id)
  saved with its tokenizer under root/src, and its conversion: (model, src, dst)."""
  torch.manual_seed(0)
  config = transformers.CLIPConfig(
      text_config=dict(TEXT, vocab_size=len(BPE_VOCAB), bos_token_id=21, pad_token_id=22,
                       eos_token_id=2),
      vision_config=VISION, projection_dim=12)
  model = parity.randomize(transformers.CLIPModel(config).eval(), norms_only=True, spread=0.5)
  src, dst = parity.round_trip(model, clip_conversion.KIND, root)
  write_tokenizer(root / "src")
  return model, src, dst


@pytest.fixture(scope="module")
def tiny_clip_folder(tmp_path_factory):
  return make_tiny_clip_folder(tmp_path_factory.mktemp("clip_text_score"))


def test_text_score_matches_torch(tiny_clip_folder):
  model, src, dst = tiny_clip_folder
  frames = np.random.default_rng(2).integers(0, 256, (2, 3, 40, 56, 3), dtype=np.uint8)
  prompts = ["lower newer", "wider lowest low lower " * 3]   # the second one is truncated
  tok = tokenize.load_clip_tokenizer(src)
  reference_tok = transformers.CLIPTokenizer.from_pretrained(src)
  with torch.no_grad():
    pixels = pil_processor(32)(images=list(frames.reshape(-1, 40, 56, 3)),
                               return_tensors="pt").pixel_values
    image = model.get_image_features(pixel_values=pixels).pooler_output.reshape(2, 3, -1)
    text = model.get_text_features(**reference_tok(prompts, padding="max_length", max_length=12,
                                                   truncation=True, return_tensors="pt")
                                   ).pooler_output
    cos = torch.nn.functional.cosine_similarity(image, text[:, None], dim=-1, eps=0.0)
    want = cos.mean(dim=1).numpy()

  module, variables = load_pretrained(dst)
  ids, mask, truncated = tokenize.tokenize_clip(tok, prompts,
                                                module.config.text.max_position_embeddings)
  assert truncated == [False, True]
  similarity = jax.jit(functools.partial(text_score.frame_text_similarity, module))
  per_frame = similarity(variables, text_score.clip_pixels(frames, module.config.vision.image_size),
                         ids, mask)
  got = np.asarray(jnp.mean(per_frame, axis=1))
  err = parity.max_abs_error(got, want)
  print(f"text score {got} (torch {want}), max abs error {err:.2e}")
  assert per_frame.shape == (2, 3) and err <= 1e-5
  embeds = module.apply(variables, text_score.clip_pixels(frames[0], 32), ids[:1], mask[:1])
  np.testing.assert_allclose(
      np.asarray(text_score.text_score(embeds["image_embeds"][None], embeds["text_embeds"])),
      got[:1], atol=1e-6)
