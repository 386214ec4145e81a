"""CogVideoX VAE parity against diffusers AutoencoderKLCogVideoX with random weights.

A tiny diffusers VAE (norm parameters randomized too) is saved with save_pretrained, converted by
`python -m conversion cogvideox-vae`'s converter and loaded with load_pretrained. Frame counts
1, 9, 17, 25 cover one chunk of one frame, one chunk of 9, and 9 + one or two scanned chunks of 8
(decode: 1, 3, 3 + 2, 3 + 2 + 2 latent frames); 16x24 is not square.
"""
import jax
import numpy as np
import pytest
import torch
from diffusers import AutoencoderKLCogVideoX

from conversion import cogvideox_vae as conv
from sem_repa_jax.models import load_pretrained
from sem_repa_jax.models.cogvideox.vae import (Tiling, chunk_plan, config_from_diffusers,
                                               sample_posterior)
from sem_repa_jax.nn.convs import CausalConv3d
from tests import parity

H, W, LATENT = 16, 24, 4
TOL = 1e-4
# The tiny graphs are compiled without LLVM optimizations: a third of the compile time.
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def _tiny_reference():
  torch.manual_seed(0)
  ref = AutoencoderKLCogVideoX(block_out_channels=(8, 16, 16, 16), latent_channels=LATENT,
                               layers_per_block=1, norm_num_groups=4, sample_height=48,
                               sample_width=40).eval()
  return parity.randomize(ref, seed=1, norms_only=True, spread=0.3)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
  ref = _tiny_reference()
  _, dst = parity.round_trip(ref, conv.KIND, tmp_path_factory.mktemp("cogvideox_vae"))
  module, variables = load_pretrained(dst)
  return ref, module, variables


def _apply(module, variables, x, method, **kw):
  fn = jax.jit(lambda v, x: module.apply(v, x, method=method, **kw))
  return fn.lower(variables, x).compile(FAST_COMPILE)(variables, x)


def _to_torch(x):
  return torch.from_numpy(np.ascontiguousarray(x)).permute(0, 4, 1, 2, 3)


def _to_numpy(t):
  return t.permute(0, 2, 3, 4, 1).numpy()


@pytest.mark.parametrize("frames", [1, 9, 17, 25])
def test_encode_decode_match_diffusers(models, frames):
  ref, module, variables = models
  r = np.random.default_rng(frames)
  video = r.uniform(-1, 1, (1, frames, H, W, 3)).astype(np.float32)
  mean, logvar = _apply(module, variables, video, "encode")
  with torch.no_grad():
    posterior = ref.encode(_to_torch(video)).latent_dist
  ref_mean, ref_logvar = _to_numpy(posterior.mean), _to_numpy(posterior.logvar)
  assert mean.shape == ref_mean.shape == (1, module.config.latent_frames(frames), 2, 3, LATENT)
  err_mean = float(np.abs(np.asarray(mean) - ref_mean).max())
  err_logvar = float(np.abs(np.asarray(logvar) - ref_logvar).max())

  latents = r.standard_normal(ref_mean.shape).astype(np.float32)
  video_out = _apply(module, variables, latents, "decode")
  with torch.no_grad():
    ref_video = _to_numpy(ref.decode(_to_torch(latents)).sample)
  assert video_out.shape == ref_video.shape == (1, frames, H, W, 3)
  err_video = float(np.abs(np.asarray(video_out) - ref_video).max())
  print(f"frames {frames}: encode mean {err_mean:.2g}, logvar {err_logvar:.2g}, "
        f"decode {err_video:.2g} (scale {np.abs(ref_video).max():.2g})")
  assert max(err_mean, err_logvar, err_video) <= TOL


def test_tiled_decode_matches_diffusers(models):
  ref, module, variables = models
  # 8x7 latents with 48x40-pixel tiles (6x5 latents): 2x2 tiles of four different shapes.
  latents = np.random.default_rng(5).standard_normal((1, 3, 8, 7, LATENT)).astype(np.float32)
  tiling = Tiling(48, 40)
  out = np.asarray(_apply(module, variables, latents, "decode", tiling=tiling))
  ref.enable_tiling(tile_sample_min_height=48, tile_sample_min_width=40)
  try:
    with torch.no_grad():
      expected = _to_numpy(ref.decode(_to_torch(latents)).sample)
  finally:
    ref.disable_tiling()
  with torch.no_grad():
    untiled = _to_numpy(ref.decode(_to_torch(latents)).sample)
  assert np.abs(untiled - expected).max() > 1e-3, "the reference did not tile"
  assert out.shape == expected.shape == (1, 9, 64, 56, 3)
  err = float(np.abs(out - expected).max())
  print(f"tiled decode 64x56 (4 tiles): max abs error {err:.2g}")
  assert err <= TOL


def test_tiled_encode_matches_diffusers(models):
  ref, module, variables = models
  video = np.random.default_rng(6).uniform(-1, 1, (1, 9, 64, 56, 3)).astype(np.float32)
  mean, logvar = _apply(module, variables, video, "encode", tiling=Tiling(48, 40))
  ref.enable_tiling(tile_sample_min_height=48, tile_sample_min_width=40)
  try:
    with torch.no_grad():
      posterior = ref.encode(_to_torch(video)).latent_dist
  finally:
    ref.disable_tiling()
  assert mean.shape == (1, 3, 8, 7, LATENT)
  err = max(float(np.abs(np.asarray(mean) - _to_numpy(posterior.mean)).max()),
            float(np.abs(np.asarray(logvar) - _to_numpy(posterior.logvar)).max()))
  print(f"tiled encode 64x56 (4 tiles): max abs error {err:.2g}")
  assert err <= TOL


def test_causal_conv_taps_equal_conv3d_and_carry_the_cache():
  x = np.random.default_rng(0).standard_normal((2, 5, 6, 7, 3)).astype(np.float32)
  taps, conv3d = CausalConv3d(4, impl="taps"), CausalConv3d(4, impl="conv3d")
  v = taps.init(jax.random.key(0), x[:, :1])

  @jax.jit
  def both(v, x):
    whole = conv3d.apply(v, x)[0]
    first, cache = taps.apply(v, x[:, :2])
    rest, _ = taps.apply(v, x[:, 2:], cache)
    return whole, jax.numpy.concatenate([first, rest], axis=1)

  whole, chunked = both(v, x)
  # Chunks with the cache equal one pass: the cache is exactly the missing left context.
  np.testing.assert_allclose(np.asarray(chunked), np.asarray(whole), atol=1e-5)


def test_chunk_plan_follows_diffusers_slicing():
  # diffusers: first chunk [0, chunk + F % chunk), then chunks of `chunk` frames.
  assert chunk_plan(1, 8) == (1, 0)
  assert chunk_plan(49, 8) == (9, 5)
  assert chunk_plan(13, 2) == (3, 5)
  assert chunk_plan(20, 8) == (12, 1)
  assert chunk_plan(6, 8) == (6, 0)


def test_sample_posterior_statistics():
  mean = np.full((4, 3, 8, 8, 4), 0.5, np.float32)
  logvar = np.full_like(mean, np.log(0.25))
  z = np.asarray(sample_posterior(mean, logvar, jax.random.key(0)))
  assert abs(z.mean() - 0.5) < 0.05 and abs(z.std() - 0.5) < 0.05


def test_conversion_reports_missing_and_misshaped_keys(tmp_path):
  ref = AutoencoderKLCogVideoX(block_out_channels=(8, 16, 16, 16), latent_channels=LATENT,
                               layers_per_block=1, norm_num_groups=4)
  ref.save_pretrained(tmp_path / "src")

  def corrupt(arrays):
    del arrays["decoder.up_blocks.1.resnets.0.norm2.conv_b.conv.bias"]
    arrays["encoder.conv_out.conv.weight"] = np.zeros((8, 12, 3, 3, 3), np.float32)
  folder = parity.edited_copy(tmp_path / "src", tmp_path / "vae-folder", corrupt)
  msg = str(parity.conversion_error(conv.KIND, folder, tmp_path / "out"))
  assert "vae-folder" in msg
  assert "params/decoder/up_blocks_1/resnets_0/norm2/conv_b/bias" in msg and "missing" in msg
  assert "shape mismatch: source 'encoder.conv_out.conv.weight'" in msg


def test_unsupported_config_is_named():
  with pytest.raises(ValueError, match="use_quant_conv=True is not supported"):
    config_from_diffusers({"use_quant_conv": True}, name="vae/config.json")
  with pytest.raises(ValueError, match="multiples of norm_num_groups"):
    config_from_diffusers({"block_out_channels": [8, 12], "norm_num_groups": 8})
