"""SVD temporal VAE parity against diffusers AutoencoderKLTemporalDecoder with random weights.

A tiny diffusers VAE (every parameter redrawn, the temporal mix factors too) is saved sharded with
save_pretrained, converted by `python -m conversion svd-vae` and loaded with load_pretrained.
Encoding is compared with `encode(x).latent_dist`; decoding with the SVD pipeline's chunking
(flattened B*F frames, chunks [i, i + K) each decoded with num_frames = its length), for chunk
sizes 1, 2 (not dividing 5), F, and one chunk spanning two videos. 16x24 is not square.
"""
import os

import jax
import numpy as np
import pytest
import torch
from diffusers import AutoencoderKLTemporalDecoder

from conversion import svd_vae as conv
from conversion.mapping import DictSource
from sem_repa_jax.models import load_pretrained
from sem_repa_jax.models.svd.vae import PRESETS, VAEConfig, config_from_diffusers
from tests import parity

H, W, LATENT = 16, 24, 4
TOL = 1e-4
FAST_COMPILE = {"xla_backend_optimization_level": 0}
# stable-video-diffusion-img2vid(-xt)/vae/config.json
SVD_CONFIG = {
    "_class_name": "AutoencoderKLTemporalDecoder", "_diffusers_version": "0.24.0.dev0",
    "block_out_channels": [128, 256, 512, 512], "down_block_types": ["DownEncoderBlock2D"] * 4,
    "force_upcast": True, "in_channels": 3, "latent_channels": 4, "layers_per_block": 2,
    "out_channels": 3, "sample_size": 768, "scaling_factor": 0.18215,
}


def _reference(layers_per_block: int = 2):
  torch.manual_seed(0)
  return AutoencoderKLTemporalDecoder(block_out_channels=(32, 64),
                                      down_block_types=("DownEncoderBlock2D",) * 2,
                                      layers_per_block=layers_per_block, latent_channels=LATENT,
                                      sample_size=32).eval()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
  ref = parity.randomize(_reference(), seed=1, spread=0.3)
  src, dst = parity.round_trip(ref, conv.KIND, tmp_path_factory.mktemp("svd_vae"),
                               max_shard_size="1MB")
  assert any(f.endswith(".safetensors.index.json") for f in os.listdir(src)), "not sharded"
  module, variables = load_pretrained(dst)
  return ref, src, module, variables


def _apply(module, variables, x, method, **kw):
  fn = jax.jit(lambda v, x: module.apply(v, x, method=method, **kw))
  return jax.tree.map(np.asarray, fn.lower(variables, x).compile(FAST_COMPILE)(variables, x))


def _frames_to_torch(x):
  """(B, F, H, W, C) -> the (B*F, C, H, W) images diffusers takes."""
  return torch.from_numpy(np.ascontiguousarray(x.reshape(-1, *x.shape[2:]))).permute(0, 3, 1, 2)


def _pipeline_decode(ref, latents, chunk):
  """StableVideoDiffusionPipeline.decode_latents without the 1/scaling_factor."""
  z = _frames_to_torch(latents)
  with torch.no_grad():
    out = torch.cat([ref.decode(z[i:i + chunk], num_frames=len(z[i:i + chunk])).sample
                     for i in range(0, len(z), chunk)])
  out = out.permute(0, 2, 3, 1).numpy()
  return out.reshape(*latents.shape[:2], *out.shape[1:])


def test_encode_matches_diffusers(models):
  ref, _, module, variables = models
  video = np.random.default_rng(0).uniform(-1, 1, (2, 2, H, W, 3)).astype(np.float32)
  mean, logvar = _apply(module, variables, video, "encode")
  with torch.no_grad():
    posterior = ref.encode(_frames_to_torch(video)).latent_dist
  to_np = lambda t: t.permute(0, 2, 3, 1).numpy().reshape(2, 2, H // 2, W // 2, LATENT)
  assert mean.shape == (2, 2, H // 2, W // 2, LATENT)
  err_mean = parity.max_abs_error(mean, to_np(posterior.mean))
  err_logvar = parity.max_abs_error(logvar, to_np(posterior.logvar))
  print(f"encode 2x2 frames {H}x{W}: mean {err_mean:.2g}, logvar {err_logvar:.2g}")
  assert max(err_mean, err_logvar) <= TOL


@pytest.mark.parametrize("batch,frames,chunk", [(1, 5, 1), (1, 5, 2), (1, 5, 5), (2, 3, 2)])
def test_decode_matches_the_pipelines_chunking(models, batch, frames, chunk):
  ref, _, module, variables = models
  latents = np.random.default_rng(frames + chunk).standard_normal(
      (batch, frames, H // 2, W // 2, LATENT)).astype(np.float32)
  out = _apply(module, variables, latents, "decode", decode_chunk_size=chunk)
  expected = _pipeline_decode(ref, latents, chunk)
  assert out.shape == expected.shape == (batch, frames, H, W, 3)
  err = parity.max_abs_error(out, expected)
  print(f"decode B={batch} F={frames} chunk {chunk}: max abs error {err:.2g} "
        f"(scale {np.abs(expected).max():.2g})")
  assert err <= TOL
  # The chunk size is part of the numbers: the temporal layers see one chunk's frames.
  whole = _pipeline_decode(ref, latents, batch * frames)
  assert chunk == batch * frames or parity.max_abs_error(whole, expected) > 1e-3


def test_bfloat16_conversion_decodes_close_to_diffusers(models, tmp_path):
  ref, src, _, _ = models
  module, variables = load_pretrained(parity.convert(conv.KIND, src, tmp_path / "bf16",
                                                     dtype="bfloat16"))
  kernel = variables["params"]["decoder"]["time_conv_out"]["kernel"]
  assert kernel.dtype == jax.numpy.bfloat16 and module.dtype == jax.numpy.bfloat16
  latents = np.random.default_rng(8).standard_normal((1, 2, H // 2, W // 2, LATENT), np.float32)
  out = _apply(module, variables, latents, "decode", decode_chunk_size=2)
  expected = _pipeline_decode(ref, latents, 2)
  err = parity.max_abs_error(out, expected)
  print(f"bfloat16 decode: max abs error {err:.2g} (scale {np.abs(expected).max():.2g})")
  assert err <= 0.05 * np.abs(expected).max()


def test_rematerialized_decoder_matches_diffusers(models):
  ref, _, module, variables = models
  latents = np.random.default_rng(7).standard_normal((1, 3, H // 2, W // 2, LATENT), np.float32)
  out = _apply(module.clone(remat_policy="full"), variables, latents, "decode",
               decode_chunk_size=2)
  assert parity.max_abs_error(out, _pipeline_decode(ref, latents, 2)) <= TOL


def test_decode_memory_is_bounded_by_the_chunk(models):
  _, _, module, variables = models

  def temp_bytes(frames):
    latents = jax.ShapeDtypeStruct((1, frames, H // 2, W // 2, LATENT), np.float32)
    fn = jax.jit(lambda v, z: module.apply(v, z, decode_chunk_size=2, method="decode"))
    return fn.lower(variables, latents).compile(FAST_COMPILE).memory_analysis().temp_size_in_bytes

  three, five, nine = temp_bytes(3), temp_bytes(5), temp_bytes(9)
  print(f"decode temp bytes at chunk 2: F=3 {three}, F=5 {five}, F=9 {nine} ({nine / five:.2f}x)")
  assert nine <= 1.3 * five
  # One chunk and a remainder: decoded one after the other, not interleaved (that was 1.21x F=5).
  assert three <= five


@pytest.mark.parametrize("layers_per_block", [1, 3])
def test_mapping_covers_every_parameter(layers_per_block):
  """One resnet or three in the decoder's mid block: diffusers holds parameters it never applies
  (the attention, the third resnet); the converter still maps every tensor to the model."""
  ref = _reference(layers_per_block)
  state = {k: v.numpy() for k, v in ref.state_dict().items()}
  config = config_from_diffusers(dict(ref.config))
  flat = conv.convert_arrays(DictSource(state), config)
  assert len(flat) == len(state)
  assert flat["params/decoder/time_conv_out/kernel"].shape == (3, 3, 3)   # (frames, in, out)


def test_older_attention_names_convert_to_the_same_parameters(models):
  ref, _, _, variables = models
  state = {k: v.numpy() for k, v in ref.state_dict().items()}
  renames = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
  old = {}
  for k, v in state.items():
    for new_name, old_name in renames.items():
      k = k.replace(f"attentions.0.{new_name}.", f"attentions.0.{old_name}.")
    old[k] = v
  assert "encoder.mid_block.attentions.0.proj_attn.weight" in old
  flat = conv.convert_arrays(DictSource(old), config_from_diffusers(dict(ref.config)))
  kernel = flat["params/encoder/mid_block/attentions_0/attention/to_out/kernel"]
  np.testing.assert_array_equal(
      kernel, np.asarray(variables["params"]["encoder"]["mid_block"]["attentions_0"]["attention"]
                         ["to_out"]["kernel"]))


def test_mismatched_checkpoint_is_one_error_listing_every_problem(models, tmp_path):
  _, src, _, _ = models

  def corrupt(arrays):
    arrays["decoder.time_conv_out.weights"] = arrays.pop("decoder.time_conv_out.weight")
    arrays["decoder.up_blocks.0.resnets.1.time_mixer.mix_factor"] = np.zeros(2, np.float32)
  folder = parity.edited_copy(src, tmp_path / "vae-folder", corrupt)
  msg = str(parity.conversion_error(conv.KIND, folder, tmp_path / "out"))
  assert "vae-folder" in msg
  assert "unused source tensor 'decoder.time_conv_out.weights'" in msg
  assert "missing: model parameter 'params/decoder/time_conv_out/kernel'" in msg
  assert "shape mismatch: source 'decoder.up_blocks.0.resnets.1.time_mixer.mix_factor'" in msg


def test_config_from_diffusers_reads_svd_and_names_what_it_cannot_take():
  assert config_from_diffusers(SVD_CONFIG) == PRESETS["svd"] == PRESETS["svd-xt"]
  with pytest.raises(ValueError, match=r"unknown keys \['norm_num_groups'\]"):
    config_from_diffusers({**SVD_CONFIG, "norm_num_groups": 16}, name="vae/config.json")
  with pytest.raises(ValueError, match="_class_name 'AutoencoderKL'"):
    config_from_diffusers({**SVD_CONFIG, "_class_name": "AutoencoderKL"})
  with pytest.raises(ValueError, match="down_block_types"):
    config_from_diffusers({**SVD_CONFIG, "down_block_types": ["AttnDownEncoderBlock2D"] * 4})
  with pytest.raises(ValueError, match="multiples of 32"):
    VAEConfig(block_out_channels=(32, 48))


def test_bad_inputs_are_named(models):
  _, _, module, variables = models
  latents = np.zeros((1, 2, H // 2, W // 2, LATENT), np.float32)
  with pytest.raises(ValueError, match="decode_chunk_size=0 must be at least 1"):
    module.apply(variables, latents, decode_chunk_size=0, method="decode")
  with pytest.raises(ValueError, match=r"decode: latents must be \(B, F, h, w, 4\)"):
    module.apply(variables, latents[..., :3], method="decode")
  with pytest.raises(ValueError, match=r"encode: video must be \(B, F, H, W, 3\)"):
    module.apply(variables, np.zeros((2, H, W, 3), np.float32), method="encode")
