"""SVD's spatio-temporal ResNet (diffusers `SpatioTemporalResBlock`) and the blend of its two paths.

    s = ResnetBlock(x, temb)            frame by frame: GroupNorm per frame, 3x3 convolutions
    t = TemporalResnetBlock(s, temb)    GroupNorm across frames, convolutions over frames only
    y = a * s + (1 - a) * t             AlphaBlender, a = sigmoid(mix_factor)

diffusers' temporal convolutions are Conv3d with a (3, 1, 1) kernel and padding (1, 0, 0): they mix
frames and nothing else, so here they are a 1-D convolution over frames with a (3, C_in, C_out)
kernel and zero padding in time. The blender keeps diffusers' 'learned' and 'learned_with_images'
strategies (a = 1 on frames marked image-only, which then skip the temporal path) and the switch
the temporal VAE uses.
"""
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from sem_repa_jax.nn.convs import VIDEO_AXES
from sem_repa_jax.nn.partitioning import param
from sem_repa_jax.nn.resnet import ResnetBlock

MERGE_STRATEGIES = ("learned", "learned_with_images")


class TemporalConv(nn.Module):
  """x (B, F, H, W, C_in) -> (B, F, H, W, features): a convolution over frames, zero-padded."""
  features: int
  kernel_size: int = 3
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    if x.ndim != 5:
      raise ValueError(f"TemporalConv takes videos (B, F, H, W, C), got {x.shape}")
    k, (b, f, h, w, cin) = self.kernel_size, x.shape
    kernel = param(self, "kernel", nn.initializers.lecun_normal(), (k, cin, self.features),
                   (None, "conv_in", "conv_out"), self.param_dtype)
    bias = param(self, "bias", nn.initializers.zeros, (self.features,), ("conv_out",),
                 self.param_dtype)
    # Frames as the conv's height and every pixel as its width: one 2D convolution, (k, 1) kernel.
    y = jax.lax.conv_general_dilated(x.reshape(b, f, h * w, cin).astype(self.dtype),
                                     kernel[:, None].astype(self.dtype), (1, 1),
                                     ((k // 2, k // 2), (0, 0)),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return (y + bias.astype(self.dtype)).reshape(b, f, h, w, self.features)


class TemporalResnetBlock(ResnetBlock):
  """diffusers TemporalResnetBlock: the shared ResNet block with statistics across frames and
  temporal convolutions (a 1-frame kernel for the shortcut)."""
  kernel_size: Sequence[int] = (3,)
  norm_per_frame: bool = False

  def conv(self, name, x, features, kernel_size, cache=None):
    return TemporalConv(features, kernel_size[0], self.dtype, self.param_dtype, name=name)(x), None


class AlphaBlender(nn.Module):
  """`(x_spatial, x_temporal, image_only_indicator=None (B, F)) -> a * x_spatial + (1 - a) *
  x_temporal` over (B, F, ...) arrays; a = 1 - a with switch_spatial_to_temporal_mix."""
  alpha: float = 0.5
  merge_strategy: str = "learned_with_images"
  switch_spatial_to_temporal_mix: bool = False
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_spatial, x_temporal, image_only_indicator=None):
    if self.merge_strategy not in MERGE_STRATEGIES:
      raise ValueError(f"merge_strategy {self.merge_strategy!r}: ported are {MERGE_STRATEGIES}")
    mix = param(self, "mix_factor", nn.initializers.constant(self.alpha), (1,), (None,),
                self.param_dtype)
    a = jax.nn.sigmoid(mix.astype(jnp.float32))
    if self.merge_strategy == "learned_with_images":
      if image_only_indicator is None:
        raise ValueError("AlphaBlender('learned_with_images') needs image_only_indicator (B, F)")
      a = jnp.where(jnp.asarray(image_only_indicator).astype(bool), 1.0, a)
      a = a.reshape(a.shape + (1,) * (x_spatial.ndim - a.ndim))
    a = a.astype(x_spatial.dtype)
    if self.switch_spatial_to_temporal_mix:
      a = 1.0 - a
    return a * x_spatial + (1.0 - a) * x_temporal.astype(x_spatial.dtype)


class SpatioTemporalResBlock(nn.Module):
  """`(x (B, F, H, W, C), temb (B, D) or None, image_only_indicator (B, F))
  -> (B, F, H, W, out_channels)`."""
  out_channels: int
  eps: float = 1e-6
  temporal_eps: Optional[float] = None
  merge_factor: float = 0.5
  merge_strategy: str = "learned_with_images"
  switch_spatial_to_temporal_mix: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, temb=None, image_only_indicator=None):
    s, _ = ResnetBlock(self.out_channels, eps=self.eps, dtype=self.dtype,
                       param_dtype=self.param_dtype, name="spatial_res_block")(x, temb)
    eps = self.eps if self.temporal_eps is None else self.temporal_eps
    t, _ = TemporalResnetBlock(self.out_channels, eps=eps, dtype=self.dtype,
                               param_dtype=self.param_dtype, name="temporal_res_block")(s, temb)
    y = AlphaBlender(self.merge_factor, self.merge_strategy, self.switch_spatial_to_temporal_mix,
                     self.param_dtype, name="time_mixer")(s, t, image_only_indicator)
    return nn.with_logical_constraint(y, VIDEO_AXES)
