"""sd-unet: a diffusers UNet2DConditionModel folder (the unet/ of Stable Diffusion 1.x / 2.x, e.g.
stabilityai/stable-diffusion-2-1) -> sem_repa_jax UNet2DConditionModel (Orbax).

Paths and layouts are those of every diffusers U-Net (conversion/unet_rules.py). Of its own the
SD U-Net has the transformers' proj_in / proj_out: Linear (out, in) with use_linear_projection
(SD 2.x), 1x1 Conv2d (out, in, 1, 1) without (SD 1.x), both to the one dense kernel (in, out);
the config decides which layout is expected, so the other is a shape error.
"""
import numpy as np

from conversion import driver, mapping, unet_rules
from conversion.mapping import Rule
from sem_repa_jax.models.registry import factory_of

KIND = "sd-unet"
HELP = ("Stable Diffusion 1.x / 2.x U-Net (UNet2DConditionModel, e.g. VividPose's ReferenceNet) "
        "from a diffusers folder (config.json + safetensors; --variant fp16 for the fp16 files)")
FACTORY = factory_of(KIND)


def conv1x1_as_linear(w):
  """Conv2d weight (out, in, 1, 1) -> dense kernel (in, out). Another 4-D shape passes through
  unchanged and a Linear weight gets two unit axes, so that the shape check reports either (a
  square (C, C) Linear weight would otherwise pass as a kernel, transposed)."""
  if w.ndim != 4:
    return w[..., None, None]
  if w.shape[2:] != (1, 1):
    return w
  return w[:, :, 0, 0].T


def rules(config) -> list[Rule]:
  """Source name patterns -> Flax paths for one config (the heads of each block shape q/k/v)."""
  proj = mapping.linear if config.use_linear_projection else conv1x1_as_linear

  def transformer(heads):
    return (unet_rules.norm("norm", "norm")
            + unet_rules.linear(r"(?P<pr>proj_in|proj_out)", r"\g<pr>", proj)
            + unet_rules.transformer_block_leaves(heads))
  return unet_rules.unet_rules(config.num_heads, unet_rules.resnet_leaves(), transformer)


def target_shapes(module) -> dict:
  """Flat {path: shape} of every variable the module has, found abstractly (nothing allocated)."""
  from sem_repa_jax.models.sd.unet import example_inputs
  return mapping.abstract_shapes(module.init, **example_inputs(module.config))


def convert_arrays(source, config, dtype=np.float32, src_name: str = "checkpoint") -> dict:
  """Flat Flax variables from a Source of diffusers tensor names; strict (conversion.mapping)."""
  return driver.convert_arrays(KIND, source, config, rules(config), target_shapes, dtype, src_name)


def convert(src: str, dst: str, dtype: str = "float32", variant=None) -> str:
  from sem_repa_jax.models.sd.unet_config import config_from_diffusers
  return driver.convert(src, dst, dtype, kind=KIND, read=driver.folder(config_from_diffusers),
                        rules=rules, target_shapes=target_shapes, variant=variant)
