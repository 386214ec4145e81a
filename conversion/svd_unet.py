"""svd-unet: a diffusers UNetSpatioTemporalConditionModel folder (the unet/ of Stable Video
Diffusion img2vid or img2vid-xt) -> sem_repa_jax UNetSpatioTemporal (Orbax).

Paths and layouts are those of every diffusers U-Net (conversion/unet_rules.py); of its own the SVD
U-Net has the temporal ResNet, whose Conv3d (O, I, 3, 1, 1) -> (3, I, O), the temporal transformer
blocks (norm_in, ff_in), the frame position MLP and the AlphaBlender mix factors.
StableAnimator's `attn2.processor.id_to_{k,v}` map to attn2/to_{k,v}_id of a model built with
extra_context_tokens.
"""
import numpy as np

from conversion import driver, mapping, unet_rules
from conversion.mapping import Rule
from sem_repa_jax.models.registry import factory_of

KIND = "svd-unet"
HELP = ("Stable Video Diffusion (img2vid, img2vid-xt) U-Net from a diffusers folder "
        "(config.json + safetensors; --variant fp16 for the fp16 files)")
FACTORY = factory_of(KIND)


def _transformer_leaves(heads: int):
  blocks = unet_rules.transformer_block_leaves(
      heads, "transformer_blocks|temporal_transformer_blocks", "norm_in|norm[123]", "ff|ff_in",
      extra=[(r"attn2\.processor\.id_(?P<p>to_[kv])\.weight", r"attn2/\g<p>_id/kernel",
              unet_rules.qkv_kernel(heads))])
  return (unet_rules.norm("norm", "norm")
          + unet_rules.linear(r"(?P<pr>proj_in|proj_out)", r"\g<pr>")
          + unet_rules.linear(r"time_pos_embed\.(?P<l>linear_[12])", r"time_pos_embed/\g<l>")
          + [(r"time_mixer\.mix_factor", "time_mixer/mix_factor", mapping.identity)] + blocks)


_RESNET = (unet_rules.prefixed(r"spatial_res_block\.", "spatial_res_block/",
                               unet_rules.resnet_leaves())
           + unet_rules.prefixed(r"temporal_res_block\.", "temporal_res_block/",
                                 unet_rules.resnet_leaves(mapping.conv3d_over_frames))
           + [(r"time_mixer\.mix_factor", "time_mixer/mix_factor", mapping.identity)])


def rules(config) -> list[Rule]:
  """Source name patterns -> Flax paths for one config (the heads of each block shape q/k/v)."""
  return unet_rules.unet_rules(config.num_attention_heads, _RESNET, _transformer_leaves,
                               "time_embedding|add_embedding")


def target_shapes(module) -> dict:
  """Flat {path: shape} of every variable the module has, found abstractly (nothing allocated)."""
  from sem_repa_jax.models.svd.unet import example_inputs
  return mapping.abstract_shapes(module.init, **example_inputs(module.config))


def convert_arrays(source, config, dtype=np.float32, src_name: str = "checkpoint") -> dict:
  """Flat Flax variables from a Source of diffusers tensor names; strict (conversion.mapping)."""
  return driver.convert_arrays(KIND, source, config, rules(config), target_shapes, dtype, src_name)


def convert(src: str, dst: str, dtype: str = "float32", variant=None) -> str:
  from sem_repa_jax.models.svd.unet import config_from_diffusers
  return driver.convert(src, dst, dtype, kind=KIND, read=driver.folder(config_from_diffusers),
                        rules=rules, target_shapes=target_shapes, variant=variant)
