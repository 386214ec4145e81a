"""Parity of the SVD U-Net with StableAnimator's distribution-aware ID adapter (id_alignment
'distribution', 4 face tokens) against diffusers' UNetSpatioTemporalConditionModel running
attention processors written from the official adapter (benchmarks/stableanimator_torch.py,
porting-notes.md "StableAnimator").

The tiny diffusers U-Net gets, on attn2 of every spatial transformer block, a processor holding
id_to_k / id_to_v (so its state_dict has the official `attn2.processor.id_to_{k,v}.weight` keys),
and on attn2 of every temporal block one that sees the CLIP token only. Everything is randomized,
saved with torch.save as StableAnimator's unet.pth, converted through `python -m conversion
svd-unet --src unet.pth --config <folder or config.json>`, compared in float32 (<= 1e-4).
"""
import os

import numpy as np
import pytest
import torch

from benchmarks.stableanimator_torch import FACE_TOKENS, stableanimator_unet
from conversion import svd_unet as converter
from conversion.mapping import ConversionError
from sem_repa_jax.models import load_pretrained
from sem_repa_jax.models.svd.unet import UNetSpatioTemporalConfig
from sem_repa_jax.nn.attention_layers import align_distribution
from tests import parity
from tests.models.test_svd_unet import TINY, _compiler

TOL = 1e-4


def _run_torch(model, sample, c_noise, context, ids):
  t = lambda a: torch.from_numpy(np.ascontiguousarray(a))
  with torch.no_grad():
    out = model(t(sample).permute(0, 1, 4, 2, 3), t(c_noise), t(context), t(ids)).sample
  return out.permute(0, 1, 3, 4, 2).numpy()


def _inputs(frames, h, w, seed):
  r = np.random.default_rng(seed)
  return (r.standard_normal((2, frames, h, w, 8)).astype(np.float32),
          (0.25 * np.log(r.uniform(0.002, 700.0, 2))).astype(np.float32),
          r.standard_normal((2, 1 + FACE_TOKENS, 32)).astype(np.float32),
          np.array([[6.0, 127.0, 0.02], [4.0, 60.0, 0.1]], np.float32))


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
  """(torch model, unet.pth, config folder, module, variables, compiled apply)."""
  root = tmp_path_factory.mktemp("stableanimator_unet")
  torch.manual_seed(0)
  model = parity.randomize(stableanimator_unet(**TINY).eval(), seed=3)
  model.save_config(str(root / "unet"))
  src = str(root / "unet.pth")
  torch.save(model.state_dict(), src)
  dst = root / "dst"
  parity.convert("svd-unet", src, dst, config=root / "unet" / "config.json")
  module, variables = load_pretrained(str(dst))
  return model, src, str(root / "unet"), module, variables, _compiler(module)


def test_state_dict_has_the_official_adapter_keys(converted):
  model, _, _, module, _, _ = converted
  keys = [k for k in model.state_dict() if ".processor." in k]
  assert sorted(keys) == sorted(converter.adapter_names(module.config))
  assert len(keys) == 2 * 4   # spatial blocks: down 0 (1), mid (1), up 1 (2)
  assert (module.config.extra_context_tokens, module.config.id_alignment) == (4, "distribution")


@pytest.mark.parametrize("shape", [(2, 8, 8), (3, 5, 7)])
def test_matches_the_official_adapter(converted, shape):
  model, *_, variables, run = converted
  args = _inputs(*shape, seed=shape[0])
  out = np.asarray(run(variables, *args))
  want = _run_torch(model, *args)
  err = parity.max_abs_error(out, want)
  print(f"stableanimator unet {shape}: max abs err {err:.2e} (output max {np.abs(want).max():.2f})")
  assert err <= TOL
  # The face tokens matter (so the comparison sees the adapter).
  other = (args[2].copy(),)
  other[0][:, 1:] = np.random.default_rng(9).standard_normal(other[0][:, 1:].shape)
  assert parity.max_abs_error(_run_torch(model, *args[:2], other[0], args[3]), want) > 1e-2


def test_zero_clip_token_zeroes_the_id_branch(converted):
  """One zero CLIP key: softmax 1, to_v(0) = 0, so std(hs) = 0 and the aligned face branch is
  exactly zero: any face tokens give bit-equal outputs (and those of torch within 1e-4)."""
  model, *_, variables, run = converted
  sample, c_noise, context, ids = _inputs(2, 8, 8, seed=4)
  context[:, 0] = 0.0
  other = context.copy()
  other[:, 1:] = 3.0 * np.random.default_rng(5).standard_normal(other[:, 1:].shape)
  a = np.asarray(run(variables, sample, c_noise, context, ids))
  b = np.asarray(run(variables, sample, c_noise, other, ids))
  np.testing.assert_array_equal(a, b)
  assert parity.max_abs_error(a, _run_torch(model, sample, c_noise, other, ids)) <= TOL


def test_a_missing_or_unexpected_adapter_key_is_one_error(converted, tmp_path):
  model, src, config, *_ = converted
  state = torch.load(src, weights_only=True)
  gone = "up_blocks.1.attentions.1.transformer_blocks.0.attn2.processor.id_to_v.weight"
  del state[gone]
  torch.save(state, tmp_path / "missing.pth")
  e = _conversion_error(tmp_path / "missing.pth", config, tmp_path / "out")
  assert len(e.problems) == 1 and f"missing adapter tensor {gone!r}" in e.problems[0]

  extra = "down_blocks.0.attentions.0.temporal_transformer_blocks.0.attn2.processor.id_to_k.weight"
  state = torch.load(src, weights_only=True)
  state[extra] = torch.zeros(32, 32)
  torch.save(state, tmp_path / "extra.pth")
  e = _conversion_error(tmp_path / "extra.pth", config, tmp_path / "out")
  assert len(e.problems) == 1 and f"unexpected adapter tensor {extra!r}" in e.problems[0]

  with pytest.raises(ValueError, match="pass --config"):
    converter.convert(src, str(tmp_path / "out"))
  assert not os.path.exists(tmp_path / "out")


def _conversion_error(src, config, dst):
  """The error of converting SRC with --config CONFIG (a folder here); DST must stay unwritten."""
  with pytest.raises(ConversionError) as e:
    converter.convert(str(src), str(dst), config=str(config))
  assert not os.path.exists(dst)
  print(e.value)
  return e.value


def test_align_distribution_and_config_checks():
  """Per row over all other axes, unbiased std, eps on the aligned branch's std; the option needs
  extra tokens and is one of the known names."""
  r = np.random.default_rng(0)
  ip, hs = r.standard_normal((2, 6, 2, 4)), 3.0 + 2.0 * r.standard_normal((2, 6, 2, 4))
  got = np.asarray(align_distribution(ip.astype(np.float32), hs.astype(np.float32)))
  flat = lambda a: a.reshape(2, -1)
  want = ((flat(ip) - flat(ip).mean(1, keepdims=True))
          * flat(hs).std(1, ddof=1, keepdims=True) / (flat(ip).std(1, ddof=1, keepdims=True) + 1e-5)
          + flat(hs).mean(1, keepdims=True))
  np.testing.assert_allclose(flat(got), want, atol=1e-5)
  with pytest.raises(ValueError, match="needs extra_context_tokens > 0"):
    UNetSpatioTemporalConfig(**TINY, id_alignment="distribution")
  with pytest.raises(ValueError, match="id_alignment 'mean'"):
    UNetSpatioTemporalConfig(**TINY, extra_context_tokens=4, id_alignment="mean")
