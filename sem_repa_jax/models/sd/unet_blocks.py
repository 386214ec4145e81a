"""The down, mid and up blocks of the SD U-Net (diffusers `unet_2d_blocks.py`).

CrossAttnDownBlock2D / DownBlock2D, UNetMidBlock2DCrossAttn and CrossAttnUpBlock2D / UpBlock2D
are SVD's blocks (models/svd/unet_blocks.py: the layer loop, the skips, the stride-2 downsampler
with padding 1, nearest upsampling to the next skip's size) with the image layers in place of the
spatio-temporal ones: diffusers' ResnetBlock2D (the shared nn.resnet.ResnetBlock) and
Transformer2DModel. Each is rematerialized by the configured policy.
"""
from sem_repa_jax.models.sd.transformer_2d import NORM_GROUPS, Transformer2DModel
from sem_repa_jax.models.svd import unet_blocks as svd_blocks
from sem_repa_jax.nn.resnet import ResnetBlock
from sem_repa_jax.nn.stacking import remat


class _ImageLayers:
  """The two layer hooks of svd.unet_blocks' blocks, for images (B, H, W, C); no frame indicator."""

  def resnet(self, name, x, temb, indicator=None):
    cls = remat(ResnetBlock, self.remat_policy)
    return cls(self.out_channels, NORM_GROUPS, self.resnet_eps, dtype=self.dtype,
               param_dtype=self.param_dtype, name=name)(x, temb)[0]

  def transformer(self, name, x, context, indicator=None):
    cls = remat(Transformer2DModel, self.remat_policy)
    return cls(self.heads, self.transformer_layers, self.attention, self.dtype,
               self.param_dtype, name=name)(x, context)


class DownBlock2D(_ImageLayers, svd_blocks.DownBlock):
  """`(x, temb, context, None) -> (x, skips)`; cross_attention: CrossAttnDownBlock2D."""


class MidBlock2D(_ImageLayers, svd_blocks.MidBlock):
  """`(x, temb, context, None) -> x`: UNetMidBlock2DCrossAttn."""


class UpBlock2D(_ImageLayers, svd_blocks.UpBlock):
  """`(x, skips, temb, context, None, size) -> x`; cross_attention: CrossAttnUpBlock2D."""
