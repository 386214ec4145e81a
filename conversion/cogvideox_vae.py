"""cogvideox-vae: a diffusers AutoencoderKLCogVideoX folder (e.g. CogVideoX-2b/vae) -> Orbax.

Parameter paths mirror diffusers' module names (down_blocks.0 -> down_blocks_0, GroupNorm weight ->
scale, the CausalConv3d wrapper's inner `.conv` dropped, downsamplers.0 -> downsampler).
"""
import numpy as np

from conversion import driver, mapping
from conversion.mapping import Rule
from sem_repa_jax.models.registry import factory_of

KIND = "cogvideox-vae"
HELP = "CogVideoX 3D causal VAE from a diffusers AutoencoderKLCogVideoX folder (e.g. CogVideoX-2b/vae)"
FACTORY = factory_of(KIND)

_PREFIXES = [
    (r"(?P<part>encoder|decoder)\.(?P<blk>down_blocks|up_blocks)\.(?P<bi>\d+)\.resnets\.(?P<ri>\d+)\.",
     r"params/\g<part>/\g<blk>_\g<bi>/resnets_\g<ri>/"),
    (r"(?P<part>encoder|decoder)\.mid_block\.resnets\.(?P<ri>\d+)\.",
     r"params/\g<part>/mid_block/resnets_\g<ri>/"),
    (r"(?P<part>encoder|decoder)\.(?P<blk>down_blocks|up_blocks)\.(?P<bi>\d+)\.",
     r"params/\g<part>/\g<blk>_\g<bi>/"),
    (r"(?P<part>encoder|decoder)\.", r"params/\g<part>/"),
]
_LEAVES = [
    (r"(?P<n>norm1|norm2|norm_out)\.weight", r"\g<n>/scale", mapping.identity),
    (r"(?P<n>norm1|norm2|norm_out)\.bias", r"\g<n>/bias", mapping.identity),
    (r"(?P<n>norm1|norm2|norm_out)\.norm_layer\.weight", r"\g<n>/norm_layer/scale", mapping.identity),
    (r"(?P<n>norm1|norm2|norm_out)\.norm_layer\.bias", r"\g<n>/norm_layer/bias", mapping.identity),
    (r"(?P<n>norm1|norm2|norm_out)\.(?P<c>conv_y|conv_b)\.conv\.weight", r"\g<n>/\g<c>/kernel",
     mapping.conv3d),
    (r"(?P<n>norm1|norm2|norm_out)\.(?P<c>conv_y|conv_b)\.conv\.bias", r"\g<n>/\g<c>/bias",
     mapping.identity),
    (r"(?P<c>conv_in|conv_out|conv1|conv2)\.conv\.weight", r"\g<c>/kernel", mapping.conv3d),
    (r"(?P<c>conv_in|conv_out|conv1|conv2)\.conv\.bias", r"\g<c>/bias", mapping.identity),
    (r"conv_shortcut\.weight", r"conv_shortcut/kernel", mapping.conv3d),
    (r"conv_shortcut\.bias", r"conv_shortcut/bias", mapping.identity),
    (r"(?P<s>down|up)samplers\.0\.conv\.weight", r"\g<s>sampler/kernel", mapping.conv2d),
    (r"(?P<s>down|up)samplers\.0\.conv\.bias", r"\g<s>sampler/bias", mapping.identity),
]
RULES = [Rule(p + leaf, t + target, transform)
         for p, t in _PREFIXES for leaf, target, transform in _LEAVES]


target_shapes = driver.video_shapes


def convert_arrays(source, config, dtype=np.float32, src_name: str = "checkpoint") -> dict:
  """Flat Flax variables from a Source of diffusers tensors; strict (see conversion.mapping)."""
  return driver.convert_arrays(KIND, source, config, RULES, target_shapes, dtype, src_name)


def convert(src: str, dst: str, dtype: str = "float32", variant=None) -> str:
  from sem_repa_jax.models.cogvideox.vae import config_from_diffusers
  return driver.convert(src, dst, dtype, kind=KIND, read=driver.folder(config_from_diffusers),
                        rules=lambda config: RULES, target_shapes=target_shapes, variant=variant)
