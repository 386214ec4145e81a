"""face-encoder: StableAnimator's `face_encoder.pth` (a torch state dict of FusionFaceId) ->
sem_repa_jax.methods.stableanimator.face_encoder.FusionFaceId (Orbax).

Names: proj.{0,2} -> proj_0 / proj_2 (proj_2's kernel split into (tokens, D)), norm -> norm,
fusion_model.{proj_in, proj_out, norm_out} as they are, fusion_model.layers.{i}.0.* ->
layers_{i}_attn/* (to_q (D, heads, 64), to_kv (D, 2, heads, 64): k then v, to_out (heads, 64, D)),
fusion_model.layers.{i}.1.{0,1,3} -> layers_{i}_ff/{norm, linear_1, linear_2}; LayerNorm weight
-> scale, Linear (out, in) -> (in, out). The config is read from the shapes (heads of 64).
"""
import re

import numpy as np

from conversion import driver, mapping
from conversion.mapping import ConversionError, Rule
from sem_repa_jax.models.registry import factory_of

KIND = "face-encoder"
HELP = "StableAnimator face encoder (FusionFaceId) from its face_encoder.pth (torch state dict)"
FACTORY = factory_of(KIND)
EXPECTED = "StableAnimator's face_encoder.pth"
DIM_HEAD = 64   # the official FacePerceiver's; heads = D // 64


def _norm(src, dst):
  return [Rule(src + r"\.weight", dst + "/scale"), Rule(src + r"\.bias", dst + "/bias")]


def _heads_split(axis: int, parts_before: tuple = ()):
  """Linear weight -> kernel with the heads*64 axis (of the transposed weight) split."""
  def f(w):
    t = w.T
    n = t.shape[axis] // DIM_HEAD // int(np.prod(parts_before, dtype=int))
    return mapping.split_axis(t, axis, parts_before + (n, DIM_HEAD))
  return f


def rules(config) -> list[Rule]:
  d = config.cross_attention_dim
  layer = r"fusion_model\.layers\.(?P<i>\d+)\."
  attn, ff = r"params/fusion_model/layers_\g<i>_attn/", r"params/fusion_model/layers_\g<i>_ff/"
  return ([Rule(r"proj\.0\.weight", "params/proj_0/kernel", mapping.linear),
           Rule(r"proj\.0\.bias", "params/proj_0/bias"),
           Rule(r"proj\.2\.weight", "params/proj_2/kernel",
                lambda w: mapping.split_axis(w.T, 1, (w.shape[0] // d, d))),
           Rule(r"proj\.2\.bias", "params/proj_2/bias",
                lambda b: mapping.split_axis(b, 0, (b.shape[0] // d, d)))]
          + _norm(r"norm", "params/norm")
          + [Rule(rf"fusion_model\.{p}\.weight", f"params/fusion_model/{p}/kernel", mapping.linear)
             for p in ("proj_in", "proj_out")]
          + [Rule(rf"fusion_model\.{p}\.bias", f"params/fusion_model/{p}/bias")
             for p in ("proj_in", "proj_out")]
          + _norm(r"fusion_model\.norm_out", "params/fusion_model/norm_out")
          + _norm(layer + r"0\.(?P<n>norm[12])", attn + r"\g<n>")
          + [Rule(layer + r"0\.to_q\.weight", attn + "to_q/kernel", _heads_split(1)),
             Rule(layer + r"0\.to_kv\.weight", attn + "to_kv/kernel", _heads_split(1, (2,))),
             Rule(layer + r"0\.to_out\.weight", attn + "to_out/kernel", _heads_split(0))]
          + _norm(layer + r"1\.0", ff + "norm")
          + [Rule(layer + r"1\.1\.weight", ff + "linear_1/kernel", mapping.linear),
             Rule(layer + r"1\.3\.weight", ff + "linear_2/kernel", mapping.linear)])


def config_from_arrays(arrays: dict, src: str = "checkpoint"):
  """FaceEncoderConfig from the tensor shapes; every problem in one ConversionError."""
  from sem_repa_jax.methods.stableanimator.face_encoder import FaceEncoderConfig
  need = ["proj.0.weight", "proj.2.weight", "norm.weight", "fusion_model.proj_in.weight",
          "fusion_model.layers.0.0.to_q.weight", "fusion_model.layers.0.1.1.weight"]
  missing = [k for k in need if k not in arrays]
  if missing:
    raise ConversionError(src, [f"{k} missing: cannot read the sizes of {EXPECTED}"
                                for k in missing])
  shape = lambda k: tuple(arrays[k].shape)
  d = shape("norm.weight")[0]
  depth = len({m.group(1) for k in arrays if (m := re.match(r"fusion_model\.layers\.(\d+)\.", k))})
  problems = []
  if shape("proj.2.weight")[0] % d:
    problems.append(f"proj.2.weight {shape('proj.2.weight')}: rows are not tokens x {d} (the "
                    "width of norm)")
  to_q = "fusion_model.layers.0.0.to_q.weight"
  if shape(to_q)[0] != d or d % DIM_HEAD:
    problems.append(f"{to_q} {shape(to_q)}: expected ({d}, {d}) with {d} a multiple of "
                    f"{DIM_HEAD} (heads = D // {DIM_HEAD})")
  if problems:
    raise ConversionError(src, problems)
  return FaceEncoderConfig(id_embeddings_dim=shape("proj.0.weight")[1],
                           proj_hidden_dim=shape("proj.0.weight")[0], cross_attention_dim=d,
                           clip_embeddings_dim=shape("fusion_model.proj_in.weight")[1],
                           num_tokens=shape("proj.2.weight")[0] // d, depth=depth,
                           dim_head=DIM_HEAD,
                           ff_mult=shape("fusion_model.layers.0.1.1.weight")[0] // d)


def target_shapes(module) -> dict:
  import jax
  import jax.numpy as jnp
  c = module.config
  return mapping.abstract_shapes(module.init,
                                 jax.ShapeDtypeStruct((1, c.id_embeddings_dim), jnp.float32),
                                 jax.ShapeDtypeStruct((1, 1, c.clip_embeddings_dim), jnp.float32))


def convert_arrays(arrays: dict, src: str = "checkpoint") -> dict:
  """Flat {'params/...': array} of FusionFaceId from the official tensor names (strict)."""
  config = config_from_arrays(arrays, src)
  return driver.convert_arrays(KIND, mapping.DictSource(arrays), config, rules(config),
                               target_shapes, np.float32, src)


def convert(src: str, dst: str, dtype: str = "float32", variant=None) -> str:
  return driver.convert(src, dst, dtype, kind=KIND,
                        read=driver.state_dict_file(config_from_arrays, expected=EXPECTED),
                        rules=rules, target_shapes=target_shapes, variant=variant)
