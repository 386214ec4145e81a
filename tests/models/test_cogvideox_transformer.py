"""Parity of the Flax CogVideoX transformer with diffusers, through the real conversion path.

Each tiny variant is built in diffusers with every weight randomized (norms and zero-inits too),
saved with save_pretrained, converted by the converter (sharded folders, the CLI, bf16), loaded with
load_pretrained and run on random inputs, RoPE tables built as the diffusers pipeline builds them.
"""
import copy
import os
import shutil
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import CogVideoXTransformer3DModel
from jax.sharding import PartitionSpec as P
from diffusers.models.embeddings import get_3d_rotary_pos_embed
from diffusers.pipelines.cogvideo.pipeline_cogvideox import get_resize_crop_region_for_grid

from conversion import cogvideox_transformer as converter
from conversion.__main__ import main as conversion_cli
from conversion.mapping import plan
from conversion.safetensors_io import CheckpointError
from sem_repa_jax.models import load_pretrained
from sem_repa_jax.models.cogvideox.transformer import (PRESETS, CogVideoXTransformer3D,
                                                       CogVideoXTransformerConfig,
                                                       config_from_diffusers)
from tests import parity

TINY = dict(num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=3,
            time_embed_dim=24, text_embed_dim=20, num_layers=2, sample_width=8, sample_height=12,
            sample_frames=9, max_text_seq_length=5)
ROPE = dict(use_rotary_positional_embeddings=True)
V15 = dict(ROPE, patch_size_t=2, patch_bias=False, sample_width=16, sample_height=16)
# variant: (diffusers kwargs, latent (F, h, w) shapes to test). 8x12 is the sample size of the
# 1.0 variants, so 6x10 exercises positional embeddings recomputed for another resolution.
VARIANTS = {
    "2b": (dict(TINY), [(3, 12, 8), (2, 6, 10)]),
    "5b": (dict(TINY, **ROPE), [(3, 6, 10)]),
    "5b-i2v": (dict(TINY, **ROPE, in_channels=8, use_learned_positional_embeddings=True),
               [(3, 12, 8), (2, 12, 8)]),   # 2 frames: diffusers swaps in the sincos table
    "1.5-5b": (dict(TINY, **V15), [(2, 6, 10)]),
    "1.5-5b-i2v": (dict(TINY, **V15, in_channels=8, ofs_embed_dim=24), [(4, 6, 10)]),
}


def _diffusers_rope(kw, frames, h, w):
  if not kw.get("use_rotary_positional_embeddings"):
    return None
  p = 2
  gh, gw, base = h // p, w // p, (kw["sample_height"] // p, kw["sample_width"] // p)
  if kw.get("patch_size_t") is None:
    crops = get_resize_crop_region_for_grid((gh, gw), base[1], base[0])
    return get_3d_rotary_pos_embed(kw["attention_head_dim"], crops, (gh, gw), frames)
  return get_3d_rotary_pos_embed(kw["attention_head_dim"], None, (gh, gw), frames // 2,
                                 grid_type="slice", max_size=base)


def _inputs(kw, shape, seed):
  r = np.random.default_rng(seed)
  f, h, w = shape
  lat = r.standard_normal((2, f, h, w, kw["in_channels"])).astype(np.float32)
  txt = r.standard_normal((2, kw["max_text_seq_length"], kw["text_embed_dim"])).astype(np.float32)
  t = r.uniform(0, 1000, 2).astype(np.float32)
  ofs = np.array([2.0], np.float32) if kw.get("ofs_embed_dim") else None
  return lat, txt, t, ofs


def _reference(model, kw, lat, txt, t, ofs):
  """diffusers output (channels-last) and the video hidden states entering norm_final."""
  seen = {}
  hook = model.norm_final.register_forward_hook(lambda m, i, o: seen.update(h=i[0]))
  with torch.no_grad():
    out = model(torch.from_numpy(lat).permute(0, 1, 4, 2, 3), torch.from_numpy(txt),
                torch.from_numpy(t), ofs=None if ofs is None else torch.from_numpy(ofs),
                image_rotary_emb=_diffusers_rope(kw, *lat.shape[1:4])).sample
  hook.remove()
  return out.permute(0, 1, 3, 4, 2).numpy(), seen["h"].numpy()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  """{variant: (diffusers model, kwargs, converted dir, source dir)}, built lazily once."""
  cache = {}

  def get(variant):
    if variant not in cache:
      kw = VARIANTS[variant][0]
      torch.manual_seed(0)
      model = CogVideoXTransformer3DModel(**kw).eval()
      learned = model.config.use_learned_positional_embeddings
      parity.randomize(model, seed=len(cache),
                       buffers={"patch_embed.pos_embedding": 0.5} if learned else None)
      # Sharded (index file) for some variants, a single file for the others.
      shard = "30KB" if variant in ("2b", "1.5-5b-i2v") else "10GB"
      src, dst = parity.round_trip(model, converter.KIND, tmp_path_factory.mktemp(variant),
                                   max_shard_size=shard)
      cache[variant] = (model, kw, dst, src)
    return cache[variant]

  return get


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_matches_diffusers(built, variant):
  model, kw, dst, src = built(variant)
  if variant == "2b":
    assert len([f for f in os.listdir(src) if f.endswith(".safetensors")]) > 1
  module, variables = load_pretrained(dst)
  apply = jax.jit(lambda v, *a: module.apply(v, *a, return_hidden_states=True))
  for i, shape in enumerate(VARIANTS[variant][1]):
    lat, txt, t, ofs = _inputs(kw, shape, seed=i)
    out, hidden = apply(variables, lat, txt, t, ofs)
    want, want_hidden = _reference(model, kw, lat, txt, t, ofs)
    err = float(np.abs(np.asarray(out) - want).max())
    print(f"{variant} latents {shape}: max abs err {err:.2e} (output max {np.abs(want).max():.2f})")
    assert out.shape == want.shape == lat.shape[:4] + (kw["out_channels"],)
    assert err <= 1e-4
    f, h, w = shape
    pt = kw.get("patch_size_t") or 1
    assert hidden.shape == (2, f // pt, h // 2, w // 2, 32)
    np.testing.assert_allclose(np.asarray(hidden).reshape(want_hidden.shape), want_hidden,
                               atol=1e-4, rtol=0)


def test_bfloat16_conversion_without_torch(built, tmp_path):
  """The converter reads a bf16 diffusers folder with torch unimportable; the bf16 model stays close."""
  model, kw, _, _ = built("5b")
  src = tmp_path / "src_bf16"
  copy.deepcopy(model).to(torch.bfloat16).save_pretrained(src)
  code = ("import sys; sys.modules['torch'] = None; "
          "from conversion.cogvideox_transformer import convert; "
          f"convert({str(src)!r}, {str(tmp_path / 'dst')!r}, dtype='bfloat16')")
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", code], cwd=os.getcwd(), env=env,
                        capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr[-3000:]
  module, variables = load_pretrained(str(tmp_path / "dst"))
  assert module.dtype == jnp.bfloat16
  assert all(x.dtype == jnp.bfloat16 for x in jax.tree_util.tree_leaves(variables))
  lat, txt, t, ofs = _inputs(kw, VARIANTS["5b"][1][0], seed=0)
  out = np.asarray(jax.jit(module.apply)(variables, lat, txt, t), np.float32)
  want, _ = _reference(model, kw, lat, txt, t, ofs)
  rel = np.abs(out - want).max() / np.abs(want).max()
  print(f"bf16 max abs err relative to output max: {rel:.3e}")
  assert rel < 0.05


def test_corrupted_folders_give_readable_errors(built, tmp_path, capsys):
  _, _, _, src = built("5b")
  key = "transformer_blocks.1.attn1.to_k.weight"
  missing = parity.edited_copy(src, tmp_path / "missing", lambda a: a.pop(key))
  parity.conversion_error(converter.KIND, missing, tmp_path / "out",
                          match=r"transformer_blocks/attn1/to_k/kernel.*missing \[1\]")

  def wrong_shape(a):
    a["norm_out.linear.weight"] = a["norm_out.linear.weight"][:, :-1].copy()
    a["stray.weight"] = np.zeros(3, np.float32)
  shape = parity.edited_copy(src, tmp_path / "shape", wrong_shape)
  e = parity.conversion_error(converter.KIND, shape, tmp_path / "out")
  assert "shape mismatch: source 'norm_out.linear.weight'" in str(e)
  assert "unused source tensor 'stray.weight'" in str(e)

  shutil.copytree(src, tmp_path / "truncated")
  path = tmp_path / "truncated" / "diffusion_pytorch_model.safetensors"
  os.truncate(path, os.path.getsize(path) - 100)
  parity.conversion_error(converter.KIND, tmp_path / "truncated", tmp_path / "out",
                          error=CheckpointError,
                          match="diffusion_pytorch_model.safetensors.*truncated")
  assert conversion_cli([converter.KIND, "--src", str(tmp_path / "truncated"),
                         "--dst", str(tmp_path / "out")]) == 2
  assert "truncated" in capsys.readouterr().err
  assert not os.path.exists(tmp_path / "out")


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_map_every_diffusers_tensor(name):
  """At full size (meta tensors, abstract Flax shapes): every tensor of diffusers' model maps."""
  preset = PRESETS[name]
  kwargs = {k: getattr(preset, k) for k in preset.__dataclass_fields__}
  with torch.device("meta"):
    model = CogVideoXTransformer3DModel(**kwargs)
  source = parity.ShapeSource(model)
  module = CogVideoXTransformer3D(preset)
  plan(source, converter.rules(preset), converter.target_shapes(module), name)   # raises if not
  assert config_from_diffusers(dict(model.config)) == preset


def test_config_errors_and_remat_grad(built):
  with pytest.raises(ValueError, match="unknown_key|does not know"):
    config_from_diffusers({"unknown_key": 1})
  with pytest.raises(ValueError, match="ofs_embed_dim"):
    CogVideoXTransformerConfig(ofs_embed_dim=7)
  cfg = CogVideoXTransformerConfig(**VARIANTS["5b"][0])
  lat = jnp.asarray(np.random.default_rng(0).standard_normal((1, 2, 4, 4, 4)), jnp.float32)
  t = jnp.array([10.0])
  abstract = jax.eval_shape(CogVideoXTransformer3D(cfg).init, jax.random.PRNGKey(0), lat, None, t)
  spec = nn.get_partition_spec(abstract)["params"]
  assert spec["transformer_blocks"]["attn1"]["to_q"]["kernel"] == P("layers", "embed", "heads", "kv")
  assert spec["transformer_blocks"]["ff"]["proj_out"]["kernel"] == P("layers", "mlp", "embed")
  _, variables = load_pretrained(built("5b")[2])
  params = variables["params"]
  assert params["transformer_blocks"]["attn1"]["to_q"]["kernel"].shape == (2, 32, 2, 16)
  grads = {}
  for policy in ("none", "full"):
    module = CogVideoXTransformer3D(cfg, remat_policy=policy)
    loss = lambda p: jnp.sum(module.apply({"params": p}, lat, None, t) ** 2)   # no text input
    grads[policy] = jax.jit(jax.grad(loss))(params)
  for a, b in zip(jax.tree_util.tree_leaves(grads["none"]), jax.tree_util.tree_leaves(grads["full"])):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_sharded_forward_matches_single_device(built):
  """Logical axis names (params across the scan's 'layers' axis, activations) shard on 8 devices."""
  model, kw, dst, _ = built("5b")
  module, variables = load_pretrained(dst)
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:8]).reshape(2, 2, 2), ("data", "fsdp", "tensor"))
  rules = (("batch", "data"), ("embed", "fsdp"), ("heads", "tensor"), ("mlp", "tensor"),
           ("conv_in", None), ("conv_out", None), ("layers", None), ("length", None), ("kv", None))
  lat, txt, t, _ = _inputs(kw, VARIANTS["5b"][1][0], seed=3)
  with mesh, nn.logical_axis_rules(rules):
    abstract = jax.eval_shape(module.init, jax.random.PRNGKey(0), lat, txt, t)
    shardings = nn.logical_to_mesh_sharding(nn.get_partition_spec(abstract), mesh, rules)
    sharded = jax.device_put(variables, shardings)
    to_q = sharded["params"]["transformer_blocks"]["attn1"]["to_q"]["kernel"]
    assert to_q.sharding.spec == P(None, "fsdp", "tensor", None)
    out = jax.jit(module.apply)(sharded, lat, txt, t)
  want, _ = _reference(model, kw, lat, txt, t, None)
  np.testing.assert_allclose(np.asarray(out), want, atol=1e-4, rtol=0)
