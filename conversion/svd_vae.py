"""svd-vae: a diffusers AutoencoderKLTemporalDecoder folder (stable-video-diffusion-*/vae) -> Orbax.

Parameter paths mirror diffusers' module names (down_blocks.0 -> down_blocks_0, GroupNorm weight ->
scale, downsamplers.0.conv -> downsampler, the mid blocks' attention projections under
attentions_0/attention). Conv2d and Conv3d weights are told apart by their rank. The attention
also reads the names older diffusers checkpoints used (query, key, value, proj_attn).
"""
import numpy as np

from conversion import driver, mapping
from conversion.mapping import Rule
from sem_repa_jax.models.registry import factory_of

KIND = "svd-vae"
HELP = ("Stable Video Diffusion temporal VAE from a diffusers AutoencoderKLTemporalDecoder folder "
        "(e.g. stable-video-diffusion-img2vid-xt/vae)")
FACTORY = factory_of(KIND)

_PART = r"(?P<p>encoder|decoder)\."
_BLOCK = r"(?P<b>down_blocks|up_blocks)\.(?P<i>\d+)\."
_SUB = r"(?P<s>spatial_res_block|temporal_res_block)\."
_PREFIXES = [
    (_PART + _BLOCK + r"resnets\.(?P<j>\d+)\." + _SUB,
     r"params/\g<p>/\g<b>_\g<i>/resnets_\g<j>/\g<s>/"),
    (_PART + r"mid_block\.resnets\.(?P<j>\d+)\." + _SUB,
     r"params/\g<p>/mid_block/resnets_\g<j>/\g<s>/"),
    (_PART + _BLOCK + r"resnets\.(?P<j>\d+)\.", r"params/\g<p>/\g<b>_\g<i>/resnets_\g<j>/"),
    (_PART + r"mid_block\.resnets\.(?P<j>\d+)\.", r"params/\g<p>/mid_block/resnets_\g<j>/"),
    (_PART + r"mid_block\.attentions\.0\.", r"params/\g<p>/mid_block/attentions_0/"),
    (_PART + _BLOCK, r"params/\g<p>/\g<b>_\g<i>/"),
    (_PART, r"params/\g<p>/"),
    (r"", r"params/"),
]


def conv(w):
  """Conv2d OIHW -> HWIO; the temporal Conv3d (O, I, k, 1, 1) -> (k, I, O)."""
  return mapping.conv3d_over_frames(w) if w.ndim == 5 else mapping.conv2d(w)


def _single_head(kernel_axis: int):
  """A Linear weight or bias on the (1 head, C) axes of nn.Attention's kernels."""
  return lambda x: np.expand_dims(x.T if x.ndim == 2 else x, kernel_axis)


# Current names, then those of older diffusers checkpoints.
_ATTENTION = {"to_q": ("to_q", "query"), "to_k": ("to_k", "key"), "to_v": ("to_v", "value"),
              "to_out": (r"to_out\.0", "proj_attn")}


def _attention_leaves() -> list:
  leaves = []
  for target, names in _ATTENTION.items():
    out = target == "to_out"
    for name in names:
      leaves += [(name + r"\.weight", f"attention/{target}/kernel", _single_head(0 if out else 1)),
                 (name + r"\.bias", f"attention/{target}/bias",
                  mapping.identity if out else _single_head(0))]
  return leaves


_LEAVES = [
    (r"(?P<n>norm1|norm2|conv_norm_out|group_norm)\.weight", r"\g<n>/scale", mapping.identity),
    (r"(?P<n>norm1|norm2|conv_norm_out|group_norm)\.bias", r"\g<n>/bias", mapping.identity),
    (r"(?P<c>conv_in|conv_out|conv1|conv2|conv_shortcut|quant_conv|time_conv_out)\.weight",
     r"\g<c>/kernel", conv),
    (r"(?P<c>conv_in|conv_out|conv1|conv2|conv_shortcut|quant_conv|time_conv_out)\.bias",
     r"\g<c>/bias", mapping.identity),
    (r"(?P<u>down|up)samplers\.0\.conv\.weight", r"\g<u>sampler/kernel", mapping.conv2d),
    (r"(?P<u>down|up)samplers\.0\.conv\.bias", r"\g<u>sampler/bias", mapping.identity),
    (r"time_mixer\.mix_factor", r"time_mixer/mix_factor", mapping.identity),
] + _attention_leaves()
RULES = [Rule(p + leaf, t + target, transform)
         for p, t in _PREFIXES for leaf, target, transform in _LEAVES]


target_shapes = driver.video_shapes


def convert_arrays(source, config, dtype=np.float32, src_name: str = "checkpoint") -> dict:
  """Flat Flax variables from a Source of diffusers tensors; strict (see conversion.mapping)."""
  return driver.convert_arrays(KIND, source, config, RULES, target_shapes, dtype, src_name)


def convert(src: str, dst: str, dtype: str = "float32", variant=None) -> str:
  from sem_repa_jax.models.svd.vae import config_from_diffusers
  return driver.convert(src, dst, dtype, kind=KIND, read=driver.folder(config_from_diffusers),
                        rules=lambda config: RULES, target_shapes=target_shapes, variant=variant)
