"""VividPose's model (methods/vividpose) on its tiny preset: new controllers leave the SVD U-Net
exactly as it is, reference attention is the paper's Eq. 1 in every spatial block (computed here
in numpy from the layer's weights), the controllers' hooks are live once their zero layers move
and gradients reach every controller parameter, and bad inputs give one-line errors.

No public VividPose code exists, so the references are the plain SVD U-Net of this package (itself
tested against diffusers, tests/models/test_svd_unet.py) and formulas computed independently.
"""
import dataclasses
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from sem_repa_jax.methods.vividpose.model import (PRESETS, VividPose, build_models,
                                                  example_inputs, load_vividpose)
from sem_repa_jax.methods.vividpose.pose_controller import PoseControllerConfig
from sem_repa_jax.methods.vividpose.reference import check_reference_net, reference_net_features
from sem_repa_jax.models import save_pretrained
from sem_repa_jax.models.sd import unet_config as sd_config
from sem_repa_jax.models.svd.transformer_temporal import ATTN1_INPUT, INTERMEDIATES
from sem_repa_jax.models.svd.unet import UNetSpatioTemporal, spatial_block_paths

CFG = PRESETS["tiny"]
B, F, H, W = 2, 3, 8, 6                 # latent video; maps are 8x: 64 x 48 pixels
FAST = {"xla_backend_optimization_level": 0}


def _compiled(fn, *args):
  return jax.jit(fn).lower(*args).compile(FAST)


@pytest.fixture(scope="module")
def setup():
  model, reference_net = build_models(CFG)
  init = lambda key, inp: model.init(key, **inp)
  key, inp = jax.random.key(0), example_inputs(CFG)
  variables = nn.meta.unbox(_compiled(init, key, inp)(key, inp))
  ref_args = (jnp.zeros((1, 8, 8, 4)), jnp.zeros((1,)), jnp.zeros((1, 1, 32)))
  ref_vars = nn.meta.unbox(_compiled(reference_net.init, jax.random.key(1), *ref_args)(
      jax.random.key(1), *ref_args))
  r = np.random.default_rng(0)
  f32 = lambda a: np.asarray(a, np.float32)
  inputs = dict(sample=f32(r.standard_normal((B, F, H, W, 8))),
                timestep=f32([0.3, -1.2]),
                clip_embeds=f32(r.standard_normal((B, 32))),
                added_time_ids=f32([[6.0, 127.0, 0.02], [4.0, 60.0, 0.1]]))
  conditions = dict(id_embedding=f32(r.standard_normal((B, 16))),
                    dense_maps=f32(r.uniform(-1, 1, (B, F, 8 * H, 8 * W, 3))),
                    skeleton_maps=f32(r.uniform(-1, 1, (B, F, 8 * H, 8 * W, 3))))
  ref_latent = f32(r.standard_normal((B, H, W, 4)))
  return model, variables, reference_net, ref_vars, inputs, conditions, ref_latent


def _plain_unet():
  """The SVD U-Net without any VividPose hook, and VividPose's U-Net parameters minus *_id."""
  plain = UNetSpatioTemporal(dataclasses.replace(CFG.unet, extra_context_tokens=0,
                                                 id_in_temporal=False, id_zero_init=False))

  def strip(tree):
    return {k: strip(v) if isinstance(v, dict) else v for k, v in tree.items()
            if not k.endswith("_id")}
  return plain, strip


def _run_plain(variables, inputs, **kwargs):
  plain, strip = _plain_unet()
  params = {"params": strip(variables["params"]["unet"])}
  args = (inputs["sample"], inputs["timestep"], inputs["clip_embeds"][:, None],
          inputs["added_time_ids"])
  return _compiled(lambda v, *a: plain.apply(v, *a, **kwargs), params, *args)(params, *args)


_CACHE = {}


def _run(model, variables, inputs, conditions=None, reference=None, **apply_kwargs):
  """model.apply compiled once per input structure and shapes."""
  conditions = conditions or {}
  args = (variables, inputs, conditions, reference)
  key = (jax.tree_util.tree_structure(args), tuple(np.shape(a) for a in jax.tree_util.tree_leaves(
      args)), tuple((k, id(v)) for k, v in sorted(apply_kwargs.items())))
  if key not in _CACHE:
    def fn(v, inp, cond, ref):
      return model.apply(v, **inp, **cond, reference_features=ref, **apply_kwargs)
    _CACHE[key] = _compiled(fn, *args)
  return _CACHE[key](*args)


def _own_attn1_inputs(variables, inputs):
  """Each spatial block's attn1 input norm1(x) of the plain U-Net, (B, F, h*w, C) per block, in
  spatial_block_paths order."""
  _, state = _run_plain(variables, inputs, mutable=[INTERMEDIATES])
  flat = traverse_util.flatten_dict(state[INTERMEDIATES], sep="/")
  sown = {re.sub(r"_(\d+)(?=/|$)", r".\1", k[:-len(ATTN1_INPUT) - 1]).replace("/", "."): v[0]
          for k, v in flat.items() if k.endswith(ATTN1_INPUT)}
  paths = [p for p, _ in spatial_block_paths(CFG.unet)]
  assert sorted(sown) == sorted(paths)
  return tuple(jnp.reshape(sown[p], (B, F) + sown[p].shape[1:]) for p in paths)


def test_new_controllers_equal_the_plain_svd_unet(setup):
  model, variables, _, _, inputs, conditions, _ = setup
  want = np.asarray(_run_plain(variables, inputs))
  full = np.asarray(_run(model, variables, inputs, conditions))
  empty_id = np.asarray(_run(model, variables, inputs))   # no ArcFace, no maps: zero ID tokens
  print(f"vividpose at init vs plain SVD: max abs {np.abs(full - want).max():.1e}, empty ID "
        f"branch {np.abs(empty_id - want).max():.1e} (output max {np.abs(want).max():.2f})")
  np.testing.assert_array_equal(full, want)
  np.testing.assert_array_equal(empty_id, want)


def test_reference_of_each_frames_own_tokens_leaves_the_output(setup):
  """Eq. 1 with z_ref = z_t: softmax over every key twice is the softmax over each once."""
  model, variables, _, _, inputs, conditions, _ = setup
  own = _own_attn1_inputs(variables, inputs)
  want = np.asarray(_run(model, variables, inputs, conditions))
  got = np.asarray(_run(model, variables, inputs, conditions, own))
  other = np.asarray(_run(model, variables, inputs, conditions, tuple(o[:, ::-1] for o in own)))
  err, moved = np.abs(got - want).max(), np.abs(other - want).max()
  print(f"own tokens as reference: max abs {err:.1e}; other frames' tokens: {moved:.2e}")
  assert err <= 1e-5
  assert moved > 1e-3   # the reference is live: other frames' tokens change the output


def _eq1(h, ref, p):
  """Attention of queries h (N, L, D) over keys/values [h, ref] with the layer's weights, numpy."""
  h, ref = np.asarray(h, np.float64), np.asarray(ref, np.float64)
  kernel = lambda name: np.asarray(p[name]["kernel"], np.float64)
  kv = np.concatenate([h, ref], axis=1)
  q = np.einsum("nld,dhe->nhle", h, kernel("to_q"))
  k = np.einsum("nld,dhe->nhle", kv, kernel("to_k"))
  v = np.einsum("nld,dhe->nhle", kv, kernel("to_v"))
  s = np.einsum("nhle,nhme->nhlm", q, k) / np.sqrt(q.shape[-1])
  a = np.exp(s - s.max(-1, keepdims=True))
  o = np.einsum("nhlm,nhme->nlhe", a / a.sum(-1, keepdims=True), v)
  return np.einsum("nlhe,hed->nld", o, kernel("to_out")) + np.asarray(p["to_out"]["bias"])


def test_reference_attention_is_eq1_in_every_spatial_block(setup):
  """ReferenceNet features (one set per video, every frame alike) into each spatial attn1: its
  output equals Eq. 1 computed in numpy from its input, the reference and its weights."""
  model, variables, reference_net, ref_vars, inputs, conditions, ref_latent = setup
  features = jax.jit(lambda rv, z, c: reference_net_features(reference_net, rv, z, c))(
      ref_vars, ref_latent, inputs["clip_embeds"])
  paths = spatial_block_paths(CFG.unet)
  tokens = {0: H * W, 1: (H // 2) * (W // 2)}   # the two levels of the tiny U-Nets
  level = lambda p: 1 if p.startswith("mid") else 0
  assert [f.shape for f in features] == [(B, tokens[level(p)], c) for p, c in paths]

  def is_attn1(module, method):
    return method == "__call__" and module.name == "attn1" and "temporal" not in module.path[-2]
  out, state = _run(model, variables, inputs, conditions, features,
                    capture_intermediates=is_attn1, mutable=[INTERMEDIATES])
  assert out.shape == (B, F, H, W, 4)
  got = traverse_util.flatten_dict(state[INTERMEDIATES], sep="/")
  params = traverse_util.flatten_dict(variables["params"]["unet"], sep="/")
  worst = 0.0
  for (path, _), ref in zip(paths, features):
    flax_path = re.sub(r"\.(\d+)", r"_\1", path).replace(".", "/")
    h = got[f"unet/{flax_path}/{ATTN1_INPUT}"][0]                      # (B*F, L, C)
    o = got[f"unet/{flax_path}/attn1/__call__"][0]
    p = {k.split("/")[-2]: {} for k in params if k.startswith(f"{flax_path}/attn1/")}
    for k, v in params.items():
      if k.startswith(f"{flax_path}/attn1/"):
        p[k.split("/")[-2]][k.split("/")[-1]] = v
    want = _eq1(h, np.repeat(np.asarray(ref), F, axis=0), p)
    worst = max(worst, np.abs(np.asarray(o) - want).max() / max(1.0, np.abs(want).max()))
  print(f"attn1 vs Eq. 1 in {len(paths)} blocks: max relative error {worst:.1e}")
  assert worst <= 1e-5


def _moved(variables, seed=0):
  """The controllers' zero layers (zero convs, every to_v_id) redrawn at random."""
  flat = traverse_util.flatten_dict(variables["params"], sep="/")
  r = np.random.default_rng(seed)
  for k, v in flat.items():
    if "/zero_conv/" in k or "/to_v_id/" in k:
      flat[k] = jnp.asarray(0.3 * r.standard_normal(v.shape), v.dtype)
  return {"params": traverse_util.unflatten_dict(flat, sep="/")}


def test_hooks_are_live_and_gradients_reach_every_controller_parameter(setup):
  model, variables, _, _, inputs, conditions, _ = setup
  moved = _moved(variables)
  base = np.asarray(_run(model, moved, inputs, conditions))
  change = {}
  for name in ("dense_maps", "skeleton_maps", "id_embedding"):
    other = dict(conditions)
    other[name] = conditions[name][::-1].copy()   # swap the two examples' condition
    change[name] = np.abs(np.asarray(_run(model, moved, inputs, other)) - base).max()
  print("output change by condition:", {k: f"{v:.2e}" for k, v in change.items()})
  assert all(v > 1e-3 for v in change.values())

  def loss(params):
    out = model.apply({"params": params}, **inputs, **conditions)
    return jnp.mean(jnp.square(out))
  grads = _compiled(jax.grad(loss), moved["params"])(moved["params"])
  flat = traverse_util.flatten_dict(grads, sep="/")
  controller = {k: v for k, v in flat.items()
                if k.startswith(("pose_controller/", "id_controller/")) or "_id/" in k}
  dead = sorted(k for k, v in controller.items() if not np.any(np.asarray(v)))
  assert len(controller) > 40 and not dead, dead


def test_errors_name_the_input():
  model, _ = build_models(CFG)
  abstract = jax.eval_shape(model.init, jax.random.key(0), **example_inputs(CFG))
  v = nn.meta.unbox(abstract)
  leaves = jax.tree_util.tree_leaves(abstract, is_leaf=lambda x: isinstance(x, nn.Partitioned))
  assert all(isinstance(x, nn.Partitioned) for x in leaves)   # logical names on every parameter
  params = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), v)
  inp = example_inputs(CFG, batch=2)
  maps = inp["dense_maps"]
  feats = tuple(jnp.zeros((2, 4, c)) for _, c in spatial_block_paths(CFG.unet))
  call = lambda **kw: model.apply(params, **{**inp, **kw})
  with pytest.raises(ValueError, match="3 token sets for the 4 spatial transformer blocks"):
    call(reference_features=feats[:3])
  with pytest.raises(ValueError, match=r"reference_features for mid_block.*expected \(2, L, 64\)"):
    call(reference_features=feats[:1] + (jnp.zeros((2, 4, 32)),) + feats[2:])
  with pytest.raises(ValueError, match=r"skeleton_maps must be \(2, 1, 16, 16, 3\)"):
    call(skeleton_maps=maps[:, :, :8])
  with pytest.raises(ValueError, match="dense_maps must be"):
    call(dense_maps=jnp.zeros((2, 2) + maps.shape[2:]))
  with pytest.raises(ValueError, match="id_embedding has 1 rows for 2"):
    call(id_embedding=inp["id_embedding"][:1])
  with pytest.raises(ValueError, match="ArcFace embeddings"):
    call(id_embedding=jnp.zeros((2, 5)))
  wide = dataclasses.replace(CFG.reference_net, block_out_channels=(32, 96), attention_head_dim=2)
  with pytest.raises(ValueError, match="ReferenceNet blocks do not match"):
    check_reference_net(wide, CFG.unet)
  with pytest.raises(ValueError, match="pose_controller.out_channels 8 != unet.out_channels 4"):
    VividPose(CFG.unet, PoseControllerConfig(out_channels=8)).init(jax.random.key(0),
                                                                  **example_inputs(CFG))
  with pytest.raises(ValueError, match="multiple of attention_head_dim"):
    PoseControllerConfig(attention_head_dim=48)


def test_presets_and_remat():
  paper = PRESETS["vividpose"]
  assert (paper.num_frames, paper.height, paper.width) == (14, 768, 512)
  assert len(spatial_block_paths(paper.unet)) == 16          # SD 2.1 and SVD: the same 16 blocks
  assert paper.reference_net == sd_config.PRESETS["sd21"]
  assert (paper.unet.extra_context_tokens, paper.unet.id_in_temporal, paper.unet.id_zero_init) \
      == (4, True, True)
  model = VividPose(CFG.unet, CFG.pose_controller, CFG.id_controller, remat_policy="full")
  inp = example_inputs(CFG)
  params = nn.meta.unbox(jax.eval_shape(model.init, jax.random.key(0), **inp))
  jaxpr = str(jax.make_jaxpr(lambda p: model.apply(p, **inp))(params))
  # 8 spatio-temporal ResNets + 4 transformers of the U-Net, and the two pose encoders
  assert jaxpr.count("= remat2[") == 8 + 4 + 2


def test_parts_save_and_load_by_kind(setup, tmp_path):
  """The three parts as folders of their kinds (svd-unet, vividpose-pose-controller,
  vividpose-id-controller) load back into the same model and variables."""
  model, variables, *_ = setup
  parts = (("unet", "svd-unet", dict(config=dataclasses.asdict(CFG.unet))),
           ("pose_controller", "vividpose-pose-controller",
            dict(config=dataclasses.asdict(CFG.pose_controller))),
           ("id_controller", "vividpose-id-controller",
            dict(config=dataclasses.asdict(CFG.id_controller))))
  for name, kind, kwargs in parts:
    save_pretrained(str(tmp_path / name), kind=kind, module_kwargs=kwargs,
                    variables={"params": variables["params"][name]})
  loaded, loaded_vars = load_vividpose(*(str(tmp_path / name) for name, _, _ in parts))
  assert (loaded.unet_config, loaded.pose_controller_config, loaded.id_controller_config) == \
      (model.unet_config, model.pose_controller_config, model.id_controller_config)
  same = jax.tree_util.tree_map(lambda a, b: bool(np.array_equal(a, b)), loaded_vars, variables)
  assert all(jax.tree_util.tree_leaves(same))
