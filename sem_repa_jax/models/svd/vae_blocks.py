"""Building blocks of SVD's temporal VAE (diffusers `AutoencoderKLTemporalDecoder`), channels-last.

The encoder is Stable Diffusion's image encoder (frames are images to it). The decoder interleaves
per-frame 2D layers with temporal ones that see every frame of the chunk being decoded:
- `TemporalConv`: diffusers' Conv3d with kernel (k, 1, 1) and zero padding of k // 2 frames, a
  1D convolution over frames at each pixel (not the CogVideoX causal convolution);
- `TemporalResnetBlock`: the ResnetBlock with those convolutions and GroupNorm statistics across
  the frames of the chunk, so the chunking is part of the numbers;
- `SpatioTemporalResBlock`: a per-frame ResnetBlock, then a TemporalResnetBlock, mixed by an
  `AlphaBlender`.
Every GroupNorm of this model has 32 groups: diffusers fixes the number, its config cannot set it.
"""
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from sem_repa_jax.nn.attention_layers import Attention
from sem_repa_jax.nn.convs import VIDEO_AXES, Conv2D
from sem_repa_jax.nn.norms import GroupNorm
from sem_repa_jax.nn.partitioning import param
from sem_repa_jax.nn.resnet import ResnetBlock

Dtype = Any
NORM_GROUPS = 32
MERGE_STRATEGIES = ("learned", "learned_with_images")


class TemporalConv(nn.Module):
  """Conv3d with kernel (kernel_frames, 1, 1) on videos (B, F, H, W, C), zero-padded in time.

  Its kernel is stored as Conv3d's (k, 1, 1, C_in, C_out) and run as a 2D convolution over
  (frames, pixels): the reshape to (k, 1, C_in, C_out) is free, no per-tap kernel slices.
  """
  features: int
  kernel_frames: int = 3
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    if x.ndim != 5:
      raise ValueError(f"TemporalConv takes videos (B, F, H, W, C), got {x.shape}")
    k, (b, f, h, w, cin) = self.kernel_frames, x.shape
    kernel = param(self, "kernel", nn.initializers.lecun_normal(), (k, 1, 1, cin, self.features),
                   (None, None, None, "conv_in", "conv_out"), self.param_dtype)
    bias = param(self, "bias", nn.initializers.zeros, (self.features,), ("conv_out",),
                 self.param_dtype)
    y = jax.lax.conv_general_dilated(
        x.reshape(b, f, h * w, cin).astype(self.dtype),
        kernel.reshape(k, 1, cin, self.features).astype(self.dtype), (1, 1),
        [(k // 2, k // 2), (0, 0)], dimension_numbers=("NHWC", "HWIO", "NHWC"))
    y = y.reshape(b, f, h, w, self.features) + bias.astype(self.dtype)
    return nn.with_logical_constraint(y, VIDEO_AXES)


class TemporalResnetBlock(ResnetBlock):
  """diffusers TemporalResnetBlock: Conv3d (3, 1, 1) convolutions (a (1, 1, 1) shortcut) and
  GroupNorm over (frames, height, width) of each group."""
  kernel_size: Sequence[int] = (3, 1, 1)
  norm_per_frame: bool = False

  def conv(self, name, x, features, kernel_size, cache=None):
    return TemporalConv(features, kernel_size[0], self.dtype, self.param_dtype, name=name)(x), None


class AlphaBlender(nn.Module):
  """diffusers AlphaBlender: a * x_spatial + (1 - a) * x_temporal with a = sigmoid(mix_factor).

  'learned_with_images' sets a = 1 on the frames image_only_indicator (B, F) marks as images;
  'learned' ignores the indicator. switch_spatial_to_temporal_mix (the temporal VAE) uses 1 - a.
  Videos are (B, F, ...): the indicator broadcasts over the axes after the frames.
  """
  merge_factor: float = 0.5
  merge_strategy: str = "learned_with_images"
  switch_spatial_to_temporal_mix: bool = False
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_spatial, x_temporal, image_only_indicator=None):
    if self.merge_strategy not in MERGE_STRATEGIES:
      raise ValueError(f"AlphaBlender merge_strategy {self.merge_strategy!r}: expected one of "
                       f"{MERGE_STRATEGIES}")
    mix = param(self, "mix_factor", nn.initializers.constant(self.merge_factor), (1,), (None,),
                self.param_dtype)
    alpha = jax.nn.sigmoid(mix.astype(jnp.float32))
    if self.merge_strategy == "learned_with_images":
      if image_only_indicator is None:
        raise ValueError("AlphaBlender 'learned_with_images' needs image_only_indicator (B, F)")
      alpha = jnp.where(image_only_indicator.astype(bool), 1.0, alpha)
      alpha = alpha.reshape(alpha.shape + (1,) * (x_spatial.ndim - alpha.ndim))
    if self.switch_spatial_to_temporal_mix:
      alpha = 1.0 - alpha
    alpha = alpha.astype(x_spatial.dtype)
    return alpha * x_spatial + (1.0 - alpha) * x_temporal


class SpatioTemporalResBlock(nn.Module):
  """diffusers SpatioTemporalResBlock on videos (B, F, H, W, C): `(x, temb=None,
  image_only_indicator=None) -> y`; temb (B, F, D) feeds both resnets."""
  out_channels: int
  eps: float = 1e-6
  temporal_eps: float = 1e-5
  merge_factor: float = 0.0
  merge_strategy: str = "learned"
  switch_spatial_to_temporal_mix: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, temb=None, image_only_indicator=None):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    spatial, _ = ResnetBlock(self.out_channels, NORM_GROUPS, self.eps, name="spatial_res_block",
                             **kw)(x, temb)
    temporal, _ = TemporalResnetBlock(self.out_channels, NORM_GROUPS, self.temporal_eps,
                                      name="temporal_res_block", **kw)(spatial, temb)
    return AlphaBlender(self.merge_factor, self.merge_strategy,
                        self.switch_spatial_to_temporal_mix, self.param_dtype,
                        name="time_mixer")(spatial, temporal, image_only_indicator)


class SpatialSelfAttention(nn.Module):
  """The mid blocks' diffusers Attention: GroupNorm, one head of width C over the pixels of each
  image or frame (q, k, v and out with bias, scale C^-1/2), plus the input."""
  eps: float = 1e-6
  implementation: str = "xla"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    h, w, c = x.shape[-3:]
    tokens = x.reshape(-1, h * w, c)
    normed = GroupNorm(NORM_GROUPS, self.eps, dtype=self.dtype, param_dtype=self.param_dtype,
                       name="group_norm")(tokens)
    out = Attention(1, c, qkv_bias=True, implementation=self.implementation, dtype=self.dtype,
                    param_dtype=self.param_dtype, name="attention")(normed)
    return (tokens + out).reshape(x.shape).astype(self.dtype)


class MidBlock(nn.Module):
  """The encoder's UNetMidBlock2D (temporal=False, two ResnetBlocks) and the decoder's
  MidBlockTemporalDecoder (temporal=True, SpatioTemporalResBlocks): resnets_0, attentions_0,
  resnets_1.

  diffusers builds one attention and num_resnets resnets but applies only the pairs of
  zip(attentions, resnets[1:]): with one resnet the attention is never applied, with three the
  last is not. Those parameters exist (checkpoints hold them), so they are created at init only.
  """
  channels: int
  num_resnets: int = 2
  temporal: bool = False
  attention: str = "xla"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def _resnet(self, i: int):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, name=f"resnets_{i}")
    if self.temporal:
      return SpatioTemporalResBlock(self.channels, **kw)
    block = ResnetBlock(self.channels, NORM_GROUPS, 1e-6, **kw)
    return lambda x: block(x)[0]

  @nn.compact
  def __call__(self, x):
    resnets = [self._resnet(i) for i in range(self.num_resnets)]
    attn = SpatialSelfAttention(1e-6, self.attention, self.dtype, self.param_dtype,
                                name="attentions_0")
    x = resnets[0](x)
    if len(resnets) > 1:
      x = resnets[1](attn(x))
    elif self.is_initializing():
      attn(x)
    if self.is_initializing():
      for unused in resnets[2:]:
        unused(x)
    return x


class DownEncoderBlock(nn.Module):
  """DownEncoderBlock2D on images (N, H, W, C): ResnetBlocks, then a stride-2 3x3 convolution
  after zero padding of one row and column at the bottom and right."""
  out_channels: int
  num_layers: int
  add_downsample: bool
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    for i in range(self.num_layers):
      x, _ = ResnetBlock(self.out_channels, NORM_GROUPS, 1e-6, name=f"resnets_{i}", **kw)(x)
    if self.add_downsample:
      x = Conv2D(self.out_channels, (3, 3), 2, ((0, 1), (0, 1)), name="downsampler", **kw)(x)
    return x


class UpBlockTemporalDecoder(nn.Module):
  """UpBlockTemporalDecoder on videos: SpatioTemporalResBlocks, then nearest x2 of height and
  width and a 3x3 convolution per frame."""
  out_channels: int
  num_layers: int
  add_upsample: bool
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    for i in range(self.num_layers):
      x = SpatioTemporalResBlock(self.out_channels, name=f"resnets_{i}", **kw)(x)
    if self.add_upsample:
      x = jnp.repeat(jnp.repeat(x, 2, axis=2), 2, axis=3)
      x = Conv2D(self.out_channels, name="upsampler", **kw)(x)
    return nn.with_logical_constraint(x, VIDEO_AXES)
