"""pose-net: StableAnimator's `pose_net.pth` (a torch state dict of its PoseNet) ->
sem_repa_jax.methods.stableanimator.posenet.PoseNet (Orbax).

Names: conv_layers.{i} -> conv_layers_{i} (the official nn.Sequential indices: convs at even i),
final_proj -> final_proj, scale -> scale; conv weights OIHW -> HWIO. The config (widths, which
convs downsample: the 4x4 kernels, input and output channels) is read from the shapes.
"""
import re

import numpy as np

from conversion import driver, mapping
from conversion.mapping import ConversionError, Rule
from sem_repa_jax.models.registry import factory_of

KIND = "pose-net"
HELP = "StableAnimator PoseNet from its pose_net.pth (torch state dict)"
FACTORY = factory_of(KIND)
EXPECTED = "StableAnimator's pose_net.pth"

RULES = [
    Rule(r"conv_layers\.(?P<i>\d+)\.weight", r"params/conv_layers_\g<i>/kernel", mapping.conv2d),
    Rule(r"conv_layers\.(?P<i>\d+)\.bias", r"params/conv_layers_\g<i>/bias"),
    Rule(r"final_proj\.weight", "params/final_proj/kernel", mapping.conv2d),
    Rule(r"final_proj\.bias", "params/final_proj/bias"),
    Rule(r"scale", "params/scale"),
]


def config_from_arrays(arrays: dict, src: str = "checkpoint"):
  """PoseNetConfig from the tensor shapes; every problem in one ConversionError."""
  from sem_repa_jax.methods.stableanimator.posenet import PoseNetConfig
  convs = sorted(int(m.group(1)) for k in arrays
                 if (m := re.fullmatch(r"conv_layers\.(\d+)\.weight", k)))
  problems = []
  if not convs:
    problems.append(f"no conv_layers.<i>.weight tensors: not {EXPECTED}")
  elif convs != list(range(0, 2 * len(convs), 2)):
    problems.append(f"conv_layers indices {convs}: expected 0, 2, 4, ... (a conv, then a SiLU)")
  kernels = [tuple(arrays[f"conv_layers.{i}.weight"].shape) for i in convs]
  odd = [(i, s) for i, s in zip(convs, kernels) if len(s) != 4 or s[2:] not in ((3, 3), (4, 4))]
  if odd:
    problems.append(f"conv_layers (index, shape) {odd}: expected 3x3 or 4x4 Conv2d weights")
  if "final_proj.weight" not in arrays:
    problems.append("final_proj.weight missing")
  if problems:
    raise ConversionError(src, problems)
  return PoseNetConfig(in_channels=kernels[0][1], widths=tuple(s[0] for s in kernels),
                       downsample=tuple(s[2] == 4 for s in kernels),
                       out_channels=int(arrays["final_proj.weight"].shape[0]))


def target_shapes(module) -> dict:
  import jax
  import jax.numpy as jnp
  side = module.config.compression
  pose = jax.ShapeDtypeStruct((1, side, side, module.config.in_channels), jnp.float32)
  return mapping.abstract_shapes(module.init, pose)


def convert_arrays(arrays: dict, src: str = "checkpoint") -> dict:
  """Flat {'params/...': array} of PoseNet from the official tensor names (strict)."""
  config = config_from_arrays(arrays, src)
  return driver.convert_arrays(KIND, mapping.DictSource(arrays), config, RULES, target_shapes,
                               np.float32, src)


def convert(src: str, dst: str, dtype: str = "float32", variant=None) -> str:
  return driver.convert(src, dst, dtype, kind=KIND,
                        read=driver.state_dict_file(config_from_arrays, expected=EXPECTED),
                        rules=lambda config: RULES, target_shapes=target_shapes, variant=variant)
