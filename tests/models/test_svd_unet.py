"""Parity of the Flax SVD U-Net with diffusers' UNetSpatioTemporalConditionModel.

A tiny diffusers U-Net (every weight randomized, norms and mix factors too) is saved sharded with
save_pretrained, converted through `python -m conversion svd-unet` and loaded with load_pretrained.
Latents of 2 frames at 8x8 and 3 frames at 5x7 (not square, and odd: the up path interpolates to
the forwarded skip size) are compared in float32; StableAnimator's two hooks against diffusers with
the same addition made by a forward hook on conv_in, and with a zero ID branch.
"""
import copy
import dataclasses
import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import UNetSpatioTemporalConditionModel
from jax.sharding import PartitionSpec as P

from conversion import svd_unet as converter
from conversion.mapping import DictSource, plan, unflatten
from sem_repa_jax.models import load_pretrained
from sem_repa_jax.models.svd.unet import (PRESETS, UNetSpatioTemporal, UNetSpatioTemporalConfig,
                                          build, config_from_diffusers, example_inputs)
from tests import parity

TINY = dict(block_out_channels=(32, 64),
            down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
            up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
            layers_per_block=1, num_attention_heads=(2, 4), cross_attention_dim=32,
            addition_time_embed_dim=8, projection_class_embeddings_input_dim=24,
            transformer_layers_per_block=1, num_frames=3)
SHAPES = [(2, 8, 8), (3, 5, 7)]   # (frames, h, w)
TOL = 1e-4
FAST_COMPILE = {"xla_backend_optimization_level": 0}   # tiny graphs: a third of the compile time


def _inputs(frames, h, w, seed, tokens=1):
  r = np.random.default_rng(seed)
  sample = r.standard_normal((2, frames, h, w, 8)).astype(np.float32)
  c_noise = (0.25 * np.log(r.uniform(0.002, 700.0, 2))).astype(np.float32)
  context = r.standard_normal((2, tokens, 32)).astype(np.float32)
  ids = np.array([[6.0, 127.0, 0.02], [4.0, 60.0, 0.1]], np.float32)
  return sample, c_noise, context, ids


def _reference(model, sample, c_noise, context, ids, pose=None):
  """diffusers' output, channels-last; pose added to conv_in's output by a forward hook."""
  to_torch = lambda a: torch.from_numpy(np.ascontiguousarray(a))
  hook = None
  if pose is not None:
    p = to_torch(pose).permute(0, 1, 4, 2, 3).flatten(0, 1)
    hook = model.conv_in.register_forward_hook(lambda m, i, o: o + p)
  try:
    with torch.no_grad():
      out = model(to_torch(sample).permute(0, 1, 4, 2, 3), to_torch(c_noise), to_torch(context),
                  to_torch(ids)).sample
  finally:
    if hook is not None:
      hook.remove()
  return out.permute(0, 1, 3, 4, 2).numpy()


def _compiler(module):
  """module.apply compiled once per input shapes, for any variables of the module's tree."""
  cache = {}

  def run(variables, *args):
    key = tuple(np.shape(a) for a in args)
    if key not in cache:
      cache[key] = jax.jit(module.apply).lower(variables, *args).compile(FAST_COMPILE)
    return np.asarray(cache[key](variables, *args))
  return run


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
  """(diffusers model, source folder, module, variables, run) of the tiny U-Net, converted once
  from a sharded folder."""
  torch.manual_seed(0)
  model = parity.randomize(UNetSpatioTemporalConditionModel(**TINY).eval(), seed=0)
  src, dst = parity.round_trip(model, converter.KIND, tmp_path_factory.mktemp("svd_unet"),
                               max_shard_size="300KB")
  assert len([f for f in os.listdir(src) if f.endswith(".safetensors")]) > 1
  module, variables = load_pretrained(dst)
  return model, src, module, variables, _compiler(module)


@pytest.mark.parametrize("shape", SHAPES)
def test_matches_diffusers(converted, shape):
  model, _, _, variables, run = converted
  args = _inputs(*shape, seed=shape[0])
  out = run(variables, *args)
  want = _reference(model, *args)
  err = parity.max_abs_error(out, want)
  print(f"svd-unet latents {shape}: max abs err {err:.2e} (output max {np.abs(want).max():.2f})")
  assert out.shape == want.shape == args[0].shape[:4] + (4,)
  assert err <= TOL


@pytest.fixture(scope="module")
def stableanimator(converted):
  """The tiny U-Net with N = 4 extra context tokens (StableAnimator's face tokens after the CLIP
  token), its flat variables with a zero ID branch, and its compiled apply taking pose_features."""
  model = converted[0]
  state = {k: v.numpy() for k, v in model.state_dict().items()}
  config = config_from_diffusers(dict(model.config), extra_context_tokens=4)
  ids = {}
  for k, v in state.items():
    if k.endswith("attn2.to_k.weight") and ".transformer_blocks." in k:
      for p in ("k", "v"):
        ids[k.replace("attn2.to_k", f"attn2.processor.id_to_{p}")] = np.zeros_like(v)
  assert len(ids) == 2 * 4   # spatial blocks: down 0 (1), mid (1), up 1 (2)
  flat = converter.convert_arrays(DictSource({**state, **ids}), config)
  return flat, _compiler(UNetSpatioTemporal(config))


def test_pose_features_are_added_after_conv_in(converted, stableanimator):
  """Against diffusers with the same addition made by a forward hook on conv_in (the ID branch
  zero, so diffusers sees the CLIP token alone)."""
  model = converted[0]
  flat, run = stableanimator
  sample, c_noise, context, ids = _inputs(*SHAPES[0], seed=7, tokens=5)
  pose = np.random.default_rng(8).standard_normal(sample.shape[:4] + (32,)).astype(np.float32)
  out = run(unflatten(flat), sample, c_noise, context, ids, pose)
  want = _reference(model, sample, c_noise, context[:, :1], ids, pose=pose)
  err = parity.max_abs_error(out, want)
  print(f"svd-unet with pose_features: max abs err {err:.2e}")
  assert err <= TOL
  assert parity.max_abs_error(want, _reference(model, sample, c_noise, context[:, :1], ids)) > 1e-2


def test_extra_context_tokens_route_through_their_own_projections(converted, stableanimator):
  """With zero to_k_id / to_v_id the ID branch adds nothing (diffusers with the CLIP token alone);
  with other weights it changes the output. Only spatial cross-attentions have the group."""
  model = converted[0]
  flat, run = stableanimator
  params = unflatten(flat)
  attn = params["params"]["down_blocks_0"]["attentions_0"]
  assert "to_k_id" in attn["transformer_blocks_0"]["attn2"]
  assert "to_k_id" not in attn["transformer_blocks_0"]["attn1"]
  assert "to_k_id" not in attn["temporal_transformer_blocks_0"]["attn2"]
  sample, c_noise, context, ids = _inputs(*SHAPES[0], seed=3, tokens=5)
  no_pose = np.zeros(sample.shape[:4] + (32,), np.float32)
  out = run(params, sample, c_noise, context, ids, no_pose)
  want = _reference(model, sample, c_noise, context[:, :1], ids)
  err = parity.max_abs_error(out, want)
  print(f"svd-unet, 4 extra context tokens with a zero ID branch: max abs err {err:.2e}")
  assert err <= TOL
  rng = np.random.default_rng(0)
  live = {k: (0.2 * rng.standard_normal(v.shape)).astype(np.float32) for k, v in flat.items()
          if "_id/" in k}
  out_live = run(unflatten({**flat, **live}), sample, c_noise, context, ids, no_pose)
  assert parity.max_abs_error(out_live, want) > 1e-2


def test_mismatched_checkpoint_is_one_error_and_writes_nothing(converted, tmp_path):
  src = converted[1]
  renamed = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"
  misshaped = "mid_block.resnets.1.temporal_res_block.conv1.weight"

  def edit(state):
    state[renamed.replace("to_k", "to_kk")] = state.pop(renamed)
    state[misshaped] = state[misshaped][:, :, :2].copy()
  bad = parity.edited_copy(src, tmp_path / "bad", edit)
  e = parity.conversion_error(converter.KIND, bad, tmp_path / "out")
  msg = str(e)
  print(msg)
  assert "unused source tensor 'down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_kk" in msg
  assert ("missing: model parameter 'params/down_blocks_0/attentions_0/transformer_blocks_0/"
          "attn2/to_k/kernel'") in msg
  assert f"shape mismatch: source '{misshaped}'" in msg
  assert len(e.problems) == 3


def test_mapping_covers_every_parameter(converted):
  """Each diffusers tensor fills exactly one Flax parameter, tiny and at the SVD-XT size."""
  model, _, module, variables, _ = converted
  slots = plan(parity.ShapeSource(model), converter.rules(module.config),
               converter.target_shapes(module))
  assert len(slots) == len(model.state_dict()) == len(jax.tree_util.tree_leaves(variables))
  with torch.device("meta"):   # diffusers' defaults are SVD-XT's released config.json
    full = UNetSpatioTemporalConditionModel(sample_size=96)
  assert config_from_diffusers(dict(full.config)) == PRESETS["svd-xt"]
  assert config_from_diffusers({**full.config, "num_frames": 14}) == PRESETS["svd"]
  slots = plan(parity.ShapeSource(full), converter.rules(PRESETS["svd-xt"]),
               converter.target_shapes(UNetSpatioTemporal(PRESETS["svd-xt"])), "svd-xt")
  assert len(slots) == len(full.state_dict())


def test_fp16_variant_folder_to_bfloat16_without_torch(converted, tmp_path):
  """diffusers' *.fp16.safetensors beside the float32 files, read with --variant fp16 by the CLI
  in a process where torch cannot be imported, stored as bfloat16."""
  model, src, _, variables, run = converted
  half = tmp_path / "fp16"
  copy.deepcopy(model).half().save_pretrained(half, variant="fp16")
  assert any(f.endswith(".fp16.safetensors") for f in os.listdir(half))
  code = ("import sys; sys.modules['torch'] = None; from conversion.__main__ import main; "
          f"sys.exit(main(['svd-unet', '--src', {str(half)!r}, '--dst', {str(tmp_path / 'dst')!r}, "
          "'--variant', 'fp16', '--dtype', 'bfloat16']))")
  proc = subprocess.run([sys.executable, "-c", code], cwd=os.getcwd(), capture_output=True,
                        text=True, env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert proc.returncode == 0, proc.stderr[-3000:]
  _, stored = load_pretrained(str(tmp_path / "dst"))
  assert {x.dtype for x in jax.tree_util.tree_leaves(stored)} == {jnp.dtype(jnp.bfloat16)}
  _, v16 = load_pretrained(str(tmp_path / "dst"), cast_params_to=jnp.float32)
  assert jax.tree_util.tree_structure(v16) == jax.tree_util.tree_structure(variables)
  args = _inputs(*SHAPES[0], seed=2)
  want = _reference(model, *args)
  rel = parity.max_abs_error(run(v16, *args), want) / np.abs(want).max()
  print(f"svd-unet from fp16 weights stored as bf16: max abs err relative to output max {rel:.2e}")
  assert 0 < rel < 3e-2


def test_config_json_round_trip_and_errors():
  cfg = config_from_diffusers({"_class_name": "UNetSpatioTemporalConditionModel", **TINY})
  assert cfg.num_attention_heads == (2, 4) and cfg.layers_per_block == (1, 1)
  rebuilt = build(json.loads(json.dumps(dataclasses.asdict(cfg))))
  assert rebuilt.config == cfg
  with pytest.raises(ValueError, match="does_not_exist"):
    config_from_diffusers({**TINY, "does_not_exist": 1})
  with pytest.raises(ValueError, match="AutoencoderKLTemporalDecoder"):
    config_from_diffusers({"_class_name": "AutoencoderKLTemporalDecoder"})
  with pytest.raises(ValueError, match="UpBlock3D"):
    UNetSpatioTemporalConfig(**{**TINY, "up_block_types": ("UpBlock3D", "UpBlockSpatioTemporal")})
  with pytest.raises(ValueError, match="per-layer"):
    UNetSpatioTemporalConfig(**{**TINY, "transformer_layers_per_block": ((1,), (1,))})
  with pytest.raises(ValueError, match="GroupNorm"):
    UNetSpatioTemporalConfig(**{**TINY, "block_out_channels": (32, 48)})
  module = UNetSpatioTemporal(cfg)
  inputs = example_inputs(cfg)
  with pytest.raises(ValueError, match="added_time_ids"):
    jax.eval_shape(module.init, jax.random.key(0), **{**inputs,
                                                       "added_time_ids": jnp.zeros((1, 2))})


def test_logical_axes_and_remat_policy():
  cfg = UNetSpatioTemporalConfig(**TINY)
  inputs = example_inputs(cfg)
  abstract = jax.eval_shape(UNetSpatioTemporal(cfg).init, jax.random.key(0), **inputs)
  spec = nn.get_partition_spec(abstract)["params"]
  block = spec["down_blocks_0"]["attentions_0"]
  assert block["transformer_blocks_0"]["attn2"]["to_q"]["kernel"] == P("embed", "heads", "kv")
  assert block["temporal_transformer_blocks_0"]["ff"]["proj_in"]["kernel"] == \
      P("embed", None, "mlp")
  resnet = spec["down_blocks_0"]["resnets_0"]
  assert resnet["temporal_res_block"]["conv1"]["kernel"] == P(None, "conv_in", "conv_out")
  assert resnet["spatial_res_block"]["conv1"]["kernel"] == P(None, None, "conv_in", "conv_out")
  params = nn.meta.unbox(abstract)["params"]

  def remats(policy):   # jax.checkpoint's primitive in the forward trace
    module = UNetSpatioTemporal(cfg, remat_policy=policy)
    return str(jax.make_jaxpr(lambda p: module.apply({"params": p}, **inputs))(params)).count(
        "= remat2[")
  assert remats("none") == 0
  # 8 spatio-temporal ResNets (down 1 + 1, mid 2, up 2 + 2) and 4 transformers (1, 1, 2)
  assert remats("full") == 8 + 4
  with pytest.raises(ValueError, match="remat_policy 'most'"):
    UNetSpatioTemporal(cfg, remat_policy="most").init(jax.random.key(0), **inputs)


def test_logical_axes_lower_on_a_mesh(converted):
  """Under a 2 data x 2 fsdp x 2 tensor mesh the parameters shard by their logical names and every
  activation constraint has the rank its names say (lowering checks it; compiling the sharded
  program would triple this file's time, and its numbers are GSPMD's, not this module's)."""
  module, variables = converted[2:4]
  rules = (("batch", "data"), ("embed", "fsdp"), ("heads", "tensor"), ("mlp", "tensor"),
           ("conv_out", "tensor"), ("conv_in", None), ("kv", None), ("length", None),
           ("frames", None), ("height", None), ("width", None), ("channels", None))
  shardings, hlo = parity.lower_on_mesh(module, variables, _inputs(*SHAPES[0], seed=5), rules)
  attn = shardings["params"]["mid_block"]["attentions_0"]["transformer_blocks_0"]["attn1"]
  assert attn["to_q"]["kernel"].spec == P("fsdp", "tensor", None)
  assert hlo.count("sdy.sharding_constraint") >= 100   # activations (VIDEO_AXES, tokens, heads)
