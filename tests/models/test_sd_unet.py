"""Parity of the Flax SD U-Net with diffusers' UNet2DConditionModel, and its ReferenceNet features.

Two tiny diffusers U-Nets (every weight randomized, norms too): SD 2.x style (linear proj_in/out,
one transformer layer, upcast_attention) and SD 1.x style (1x1 conv proj_in/out, two transformer
layers per block), each saved sharded with save_pretrained, converted through `python -m conversion
sd-unet` and loaded with load_pretrained. Latents 8x8 (square) and 5x7 (not square, odd: the up
path interpolates to the forwarded skip size) are compared in float32, and so are the ReferenceNet
features against norm1's outputs caught by forward hooks in diffusers.
"""
import copy
import dataclasses
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel as DiffusersUNet
from jax.sharding import PartitionSpec as P

from conversion import sd_unet as converter
from conversion.mapping import plan
from sem_repa_jax.models import load_pretrained
from sem_repa_jax.models.sd.unet import (PRESETS, UNet2DConditionModel, build,
                                         config_from_diffusers, example_inputs,
                                         reference_feature_names, reference_features)
from sem_repa_jax.models.sd.unet_config import UNet2DConditionConfig
from tests import parity

TINY = dict(block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), layers_per_block=1,
            attention_head_dim=(2, 4), cross_attention_dim=32, sample_size=8)
VARIANTS = {   # name -> diffusers kwargs beyond TINY
    "linear": dict(use_linear_projection=True, upcast_attention=True),
    "conv": dict(use_linear_projection=False, transformer_layers_per_block=2),
}
SHAPES = [(8, 8), (5, 7)]
TOL = 1e-4
FAST_COMPILE = {"xla_backend_optimization_level": 0}   # tiny graphs: a third of the compile time


def _inputs(h, w, seed):
  r = np.random.default_rng(seed)
  sample = r.standard_normal((2, h, w, 4)).astype(np.float32)
  timestep = np.array([7.0, 951.0], np.float32)
  context = r.standard_normal((2, 5, 32)).astype(np.float32)
  return sample, timestep, context


def _reference(model, sample, timestep, context):
  """diffusers' output (channels-last) and {block path: norm1 output} of every
  BasicTransformerBlock, in the order the forward ran them."""
  caught, hooks = {}, []

  def keep(name):
    def hook(module, inputs, output):   # returns None: the output is left as it is
      caught[name] = output.numpy()
    return hook
  for name, m in model.named_modules():
    if type(m).__name__ == "BasicTransformerBlock":
      hooks.append(m.norm1.register_forward_hook(keep(name)))
  try:
    with torch.no_grad():
      out = model(torch.from_numpy(sample).permute(0, 3, 1, 2), torch.from_numpy(timestep),
                  torch.from_numpy(context)).sample
  finally:
    for h in hooks:
      h.remove()
  return out.permute(0, 2, 3, 1).numpy(), caught


def _compiler(fn):
  """fn(variables, *args) compiled once per input shapes."""
  cache = {}

  def run(variables, *args):
    key = tuple(np.shape(a) for a in args)
    if key not in cache:
      cache[key] = jax.jit(fn).lower(variables, *args).compile(FAST_COMPILE)
    return cache[key](variables, *args)
  return run


def _convert(variant, tmp_path_factory):
  """(variant, diffusers model, source folder, module, variables, run, run_reference)."""
  torch.manual_seed(0)
  model = parity.randomize(DiffusersUNet(**TINY, **VARIANTS[variant]).eval(), seed=0)
  src, dst = parity.round_trip(model, converter.KIND, tmp_path_factory.mktemp(f"sd_unet_{variant}"),
                               max_shard_size="200KB")
  assert len([f for f in os.listdir(src) if f.endswith(".safetensors")]) > 1
  module, variables = load_pretrained(dst)
  return (variant, model, src, module, variables, _compiler(module.apply),
          _compiler(lambda v, *a: reference_features(module, v, *a)))


@pytest.fixture(scope="module")
def linear(tmp_path_factory):
  return _convert("linear", tmp_path_factory)


@pytest.fixture(scope="module")
def conv(tmp_path_factory):
  return _convert("conv", tmp_path_factory)


@pytest.fixture(params=sorted(VARIANTS))
def converted(request):
  """Each variant's tiny U-Net, converted once from a sharded folder."""
  return request.getfixturevalue(request.param)


@pytest.mark.parametrize("shape", SHAPES)
def test_matches_diffusers_and_reference_features(converted, shape):
  """reference_features: the output vs diffusers', and norm1's output of every
  BasicTransformerBlock in diffusers' forward order, under diffusers' names."""
  variant, model, _, module, variables, _, run_reference = converted
  args = _inputs(*shape, seed=shape[1])
  out, feats = run_reference(variables, *args)
  want, caught = _reference(model, *args)
  err = parity.max_abs_error(out, want)
  print(f"sd-unet ({variant}) {shape}: max abs err {err:.2e} (output max {np.abs(want).max():.2f})")
  assert out.shape == want.shape == args[0].shape[:3] + (4,)
  assert err <= TOL
  names = reference_feature_names(module.config)
  assert names == tuple(caught)   # count, order and names
  errs = []
  for name, f in zip(names, feats):
    assert f.shape == caught[name].shape, name
    errs.append(parity.max_abs_error(f, caught[name]))
  print(f"  {len(names)} reference features: max abs err {max(errs):.2e}")
  assert max(errs) <= TOL


def test_capture_changes_nothing_also_under_remat(converted):
  """A plain apply gives reference_features' output bit for bit; remat_policy 'full' changes
  neither the output nor the features beyond float rounding."""
  _, _, _, module, variables, run, run_reference = converted
  args = _inputs(*SHAPES[0], seed=SHAPES[0][1])
  out, feats = run_reference(variables, *args)
  assert np.array_equal(np.asarray(run(variables, *args)), np.asarray(out))
  remat = module.clone(remat_policy="full")
  out_r, feats_r = jax.jit(lambda v, *a: reference_features(remat, v, *a))(variables, *args)
  assert parity.max_abs_error(out_r, out) <= 1e-5
  assert max(parity.max_abs_error(a, b) for a, b in zip(feats_r, feats)) <= 1e-5


def test_sd21_reference_feature_names():
  """The SD 2.1 U-Net has 16 spatial self-attentions: 3 x 2 down, 1 mid, 3 x 3 up."""
  names = reference_feature_names(PRESETS["sd21"])
  assert len(names) == len(set(names)) == 6 + 1 + 9
  assert names[:2] == ("down_blocks.0.attentions.0.transformer_blocks.0",
                       "down_blocks.0.attentions.1.transformer_blocks.0")
  assert names[6] == "mid_block.attentions.0.transformer_blocks.0"
  assert names[7] == "up_blocks.1.attentions.0.transformer_blocks.0"
  assert names[-1] == "up_blocks.3.attentions.2.transformer_blocks.0"


def test_mismatched_checkpoint_is_one_error_and_writes_nothing(converted, tmp_path):
  variant, _, src, _, _, _, _ = converted
  renamed = "up_blocks.1.attentions.0.transformer_blocks.0.attn1.to_v.weight"
  misshaped = "down_blocks.0.attentions.0.proj_in.weight"

  def edit(state):
    state[renamed.replace("to_v", "to_vv")] = state.pop(renamed)
    state[misshaped] = state[misshaped][:16].copy()
  bad = parity.edited_copy(src, tmp_path / "bad", edit)
  e = parity.conversion_error(converter.KIND, bad, tmp_path / "out")
  msg = str(e)
  print(msg)
  assert f"unused source tensor '{renamed.replace('to_v', 'to_vv')}'" in msg
  assert ("missing: model parameter 'params/up_blocks_1/attentions_0/transformer_blocks_0/attn1/"
          "to_v/kernel'") in msg
  assert f"shape mismatch: source '{misshaped}'" in msg
  assert len(e.problems) == 3


def test_projection_layout_must_match_the_config(converted, tmp_path):
  """A folder whose config says the other proj_in/out layout (Linear vs 1x1 Conv2d): each of the
  proj weights of the 4 transformers (down 0, mid, up 1 twice) is reported, square or not."""
  _, _, src, _, _, _, _ = converted
  bad = parity.edited_copy(src, tmp_path / "flipped", lambda state: None)
  with open(os.path.join(bad, "config.json")) as f:
    cfg = json.load(f)
  cfg["use_linear_projection"] = not cfg["use_linear_projection"]
  with open(os.path.join(bad, "config.json"), "w") as f:
    json.dump(cfg, f)
  e = parity.conversion_error(converter.KIND, bad, tmp_path / "out")
  assert len(e.problems) == 4 * 2, e.problems
  assert all(p.startswith("shape mismatch") and ".proj_" in p for p in e.problems)


def test_mapping_covers_every_parameter(converted):
  """Each diffusers tensor fills exactly one Flax parameter, tiny and at the SD 2.1 / 1.5 sizes."""
  variant, model, _, module, variables, _, _ = converted
  slots = plan(parity.ShapeSource(model), converter.rules(module.config),
               converter.target_shapes(module))
  assert len(slots) == len(model.state_dict()) == len(jax.tree_util.tree_leaves(variables))
  preset = "sd21" if variant == "linear" else "sd15"
  released = dict(   # the keys of the released unet/config.json files that differ from defaults
      sd21=dict(attention_head_dim=[5, 10, 20, 20], cross_attention_dim=1024, sample_size=96,
                use_linear_projection=True, upcast_attention=True),
      sd15=dict(cross_attention_dim=768, sample_size=64))[preset]
  with torch.device("meta"):
    full = DiffusersUNet(**released)
  assert config_from_diffusers(dict(full.config)) == PRESETS[preset]
  slots = plan(parity.ShapeSource(full), converter.rules(PRESETS[preset]),
               converter.target_shapes(UNet2DConditionModel(PRESETS[preset])), preset)
  assert len(slots) == len(full.state_dict())


def test_fp16_variant_folder(linear, tmp_path):
  """diffusers' *.fp16.safetensors read with --variant fp16 (weights rounded to fp16, stored and
  computed in float32)."""
  _, model, _, _, variables, run, _ = linear
  half = tmp_path / "fp16"
  copy.deepcopy(model).half().save_pretrained(half, variant="fp16")
  assert any(f.endswith(".fp16.safetensors") for f in os.listdir(half))
  dst = parity.convert(converter.KIND, half, tmp_path / "dst", variant="fp16")
  _, v16 = load_pretrained(dst)
  assert jax.tree_util.tree_structure(v16) == jax.tree_util.tree_structure(variables)
  args = _inputs(*SHAPES[0], seed=2)
  want = _reference(model, *args)[0]
  rel = parity.max_abs_error(run(v16, *args), want) / np.abs(want).max()
  print(f"sd-unet from fp16 weights: max abs err relative to output max {rel:.2e}")
  assert 0 < rel < 1e-2


def test_config_json_round_trip_and_errors():
  cfg = config_from_diffusers({"_class_name": "UNet2DConditionModel", **TINY,
                               "_use_default_values": ["act_fn"],
                               "only_cross_attention": [False, False]})
  assert cfg.num_heads == (2, 4) and cfg.layers_per_block == (1, 1)
  assert build(json.loads(json.dumps(dataclasses.asdict(cfg)))).config == cfg
  with pytest.raises(ValueError, match="does_not_exist"):
    config_from_diffusers({**TINY, "does_not_exist": 1})
  with pytest.raises(ValueError, match="UNetSpatioTemporalConditionModel"):
    config_from_diffusers({"_class_name": "UNetSpatioTemporalConditionModel"})
  with pytest.raises(ValueError, match=r"class_embed_type='timestep' is not ported"):
    config_from_diffusers({**TINY, "class_embed_type": "timestep"})
  with pytest.raises(ValueError, match=r"mid_block_type='UNetMidBlock2DSimpleCrossAttn'"):
    config_from_diffusers({**TINY, "mid_block_type": "UNetMidBlock2DSimpleCrossAttn"})
  with pytest.raises(ValueError, match="AttnDownBlock2D"):
    UNet2DConditionConfig(**{**TINY, "down_block_types": ("AttnDownBlock2D", "DownBlock2D")})
  with pytest.raises(ValueError, match="number of heads"):
    UNet2DConditionConfig(**{**TINY, "attention_head_dim": (3, 4)})
  with pytest.raises(ValueError, match="per-layer"):
    UNet2DConditionConfig(**{**TINY, "transformer_layers_per_block": ((1,), (1,))})
  module = UNet2DConditionModel(cfg)
  inputs = example_inputs(cfg)
  with pytest.raises(ValueError, match="encoder_hidden_states"):
    jax.eval_shape(module.init, jax.random.key(0),
                   **{**inputs, "encoder_hidden_states": jnp.zeros((1, 3, 16))})


def test_logical_axes_and_remat_policy():
  cfg = UNet2DConditionConfig(**TINY)
  inputs = example_inputs(cfg)
  abstract = jax.eval_shape(UNet2DConditionModel(cfg).init, jax.random.key(0), **inputs)
  spec = nn.get_partition_spec(abstract)["params"]
  block = spec["down_blocks_0"]["attentions_0"]
  assert block["transformer_blocks_0"]["attn2"]["to_q"]["kernel"] == P("embed", "heads", "kv")
  assert block["transformer_blocks_0"]["ff"]["proj_in"]["kernel"] == P("embed", None, "mlp")
  assert block["proj_in"]["kernel"] == P(None, "embed")
  assert spec["down_blocks_0"]["resnets_0"]["conv1"]["kernel"] == \
      P(None, None, "conv_in", "conv_out")
  params = nn.meta.unbox(abstract)["params"]

  def remats(policy):   # jax.checkpoint's primitive in the forward trace
    module = UNet2DConditionModel(cfg, remat_policy=policy)
    return str(jax.make_jaxpr(lambda p: module.apply({"params": p}, **inputs))(params)).count(
        "= remat2[")
  assert remats("none") == 0
  assert remats("full") == 8 + 4   # ResNets: down 1 + 1, mid 2, up 2 + 2; transformers 1, 1, 2
  with pytest.raises(ValueError, match="remat_policy 'most'"):
    UNet2DConditionModel(cfg, remat_policy="most").init(jax.random.key(0), **inputs)


def test_logical_axes_lower_on_a_mesh(linear):
  """Under a 2 data x 2 fsdp x 2 tensor mesh the parameters shard by their logical names and every
  activation constraint has the rank its names say (image activations are 4-D)."""
  _, _, _, module, variables, _, _ = linear
  rules = (("batch", "data"), ("embed", "fsdp"), ("heads", "tensor"), ("mlp", "tensor"),
           ("conv_out", "tensor"), ("conv_in", None), ("kv", None), ("length", None),
           ("height", None), ("width", None), ("channels", None))
  shardings, hlo = parity.lower_on_mesh(module, variables, _inputs(*SHAPES[0], seed=5), rules)
  attn = shardings["params"]["mid_block"]["attentions_0"]["transformer_blocks_0"]["attn1"]
  assert attn["to_q"]["kernel"].spec == P("fsdp", "tensor", None)
  assert hlo.count("sdy.sharding_constraint") >= 40   # activations (images, tokens, heads)
