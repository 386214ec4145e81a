"""RAFT from torchvision's weights files into sem_repa_jax.models.metrics.raft.

--src is the plain state dict torchvision downloads (raft_large_C_T_SKHT_V2-ff5fadd5.pth, the
motion score's network; raft_small_C_T_V2-01064c6d.pth works too). Large or small is read from the
width of feature_encoder.convnormrelu.0 (64 or 32 filters); the strict mapping then checks every
other tensor against that variant. Names are torchvision's: a Conv2dNormActivation's `.0` is its
conv and `.1` its norm (BatchNorm in the large context encoder: scale, bias and the running
statistics in batch_stats); the BatchNorms' num_batches_tracked counters are set aside, as for
every BatchNorm network here. The folder runs torchvision's default 12 flow updates.
"""
import dataclasses

import numpy as np

from conversion import driver, mapping
from conversion.mapping import ConversionError, DictSource, Rule
from sem_repa_jax.models.registry import factory_of

KIND = "raft"
FACTORY = factory_of(KIND)
HELP = "RAFT optical flow (motion score) from torchvision's raft_large_C_T_SKHT_V2-ff5fadd5.pth"
WIDTH_KEY = "feature_encoder.convnormrelu.0.weight"
NUM_FLOW_UPDATES = 12   # torchvision's default

_CONV = (("weight", "kernel", mapping.conv2d), ("bias", "bias", mapping.identity))
_NORM = (("weight", "params", "scale"), ("bias", "params", "bias"),
         ("running_mean", "batch_stats", "mean"), ("running_var", "batch_stats", "var"))


def _conv_rules(src: str, dst: str) -> list:
  return [Rule(f"{src}\\.{s}", f"params/{dst}/{d}", t) for s, d, t in _CONV]


def _conv_norm_rules(src: str, dst: str) -> list:
  """torchvision's Conv2dNormActivation: `.0` the conv, `.1` the norm where it has one."""
  return (_conv_rules(src + r"\.0", dst + "/conv")
          + [Rule(f"{src}\\.1\\.{s}", f"{col}/{dst}/norm/{d}") for s, col, d in _NORM])


ENCODER = r"(feature_encoder|context_encoder)"
RULES = (_conv_norm_rules(ENCODER + r"\.convnormrelu", r"\1/convnormrelu")
         + _conv_norm_rules(ENCODER + r"\.layer(\d)\.(\d)\.(convnormrelu\d|downsample)",
                            r"\1/layer\2_\3/\4")
         + _conv_rules(ENCODER + r"\.conv", r"\1/conv")
         + _conv_norm_rules(r"update_block\.motion_encoder\.(\w+)", r"update_block/motion_encoder/\1")
         + _conv_rules(r"update_block\.recurrent_block\.(convgru\d)\.(conv[zrq])",
                       r"update_block/recurrent_block_\1/\2")
         + _conv_rules(r"update_block\.flow_head\.(conv\d)", r"update_block/flow_head_\1")
         + _conv_norm_rules(r"mask_predictor\.convrelu", "mask_predictor_convrelu")
         + _conv_rules(r"mask_predictor\.conv", "mask_predictor_conv"))


def variant_of(arrays: dict, src: str) -> str:
  """'large' or 'small', from the feature encoder's first conv."""
  from sem_repa_jax.models.metrics.raft import VARIANTS
  widths = {cfg.feature_layers[0]: name for name, cfg in VARIANTS.items()}
  shape = np.shape(arrays[WIDTH_KEY]) if WIDTH_KEY in arrays else None
  if shape is None or len(shape) != 4 or shape[0] not in widths:
    got = "no such tensor" if shape is None else f"shape {shape}"
    raise ConversionError(src, [f"{WIDTH_KEY}: {got}; expected torchvision's RAFT ("
                                + ", ".join(f"{w} filters: raft_{n}" for w, n in widths.items())
                                + ")"])
  return widths[shape[0]]


def read_arrays(src: str) -> tuple[str, dict]:
  """(variant, the network's tensors) of a torchvision RAFT .pth; the num_batches_tracked of its
  BatchNorms (those beside a running_mean) are set aside, any other tensor is the mapping's."""
  from conversion.torch_io import read_state_dict
  sd = read_state_dict(src)
  counter = "num_batches_tracked"
  kept = {k: v for k, v in sd.items()
          if not (k.endswith(counter) and k[:-len(counter)] + "running_mean" in sd)}
  return variant_of(kept, src), kept


def _read(src: str, variant=None):
  if variant is not None:
    raise ValueError(f"--variant {variant!r}: the RAFT .pth has no variants (large or small is "
                     "read from its tensors)")
  name, arrays = read_arrays(src)
  return DictSource(arrays), name


def target_shapes(module) -> dict:
  import jax
  import jax.numpy as jnp
  frames = jax.ShapeDtypeStruct((1, 128, 128, 3), jnp.float32)
  return mapping.abstract_shapes(module.init, frames, frames)


def module_kwargs(name: str, dtype: str, num_flow_updates: int = NUM_FLOW_UPDATES) -> dict:
  from sem_repa_jax.models.metrics.raft import VARIANTS
  return dict(config=dataclasses.asdict(VARIANTS[name]), num_flow_updates=num_flow_updates,
              dtype=dtype, param_dtype=dtype)


def convert_arrays(src: str) -> tuple[str, dict]:
  """(variant, flat {'params/...', 'batch_stats/...'}) of a torchvision RAFT .pth (strict)."""
  source, name = _read(src)
  module = driver.build(KIND, module_kwargs(name, "float32"))
  return name, mapping.convert(source, RULES, target_shapes(module), np.float32, src_name=src)


def convert(src: str, dst: str, dtype: str = "float32", variant=None) -> str:
  # Running statistics stay float32, as for every BatchNorm network here.
  return driver.convert(src, dst, dtype, kind=KIND, read=_read, rules=lambda name: RULES,
                        target_shapes=target_shapes, module_kwargs=module_kwargs,
                        keep_float32=("batch_stats/",), variant=variant)
