"""Building blocks of SVD's temporal VAE (diffusers `AutoencoderKLTemporalDecoder`), channels-last.

The encoder is Stable Diffusion's image encoder (frames are images to it). The decoder interleaves
per-frame 2D layers with temporal ones that see every frame of the chunk being decoded: the U-Net's
SpatioTemporalResBlock (spatio_temporal_resnet.py: GroupNorm statistics across the frames of the
chunk, so the chunking is part of the numbers) with the decoder's mixing settings.
Every GroupNorm of this model has 32 groups: diffusers fixes the number, its config cannot set it.
"""
import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from sem_repa_jax.nn.attention_layers import Attention
from sem_repa_jax.nn.convs import VIDEO_AXES, Conv2D
from sem_repa_jax.nn.norms import GroupNorm
from sem_repa_jax.models.svd.spatio_temporal_resnet import SpatioTemporalResBlock
from sem_repa_jax.nn.resnet import ResnetBlock

Dtype = Any
NORM_GROUPS = 32


# The decoder's SpatioTemporalResBlock: diffusers builds it with temporal eps 1e-5, a 'learned'
# mix starting at 0 (sigmoid 0.5) and the switch that puts 1 - a on the spatial path.
DecoderResBlock = functools.partial(SpatioTemporalResBlock, temporal_eps=1e-5, merge_factor=0.0,
                                    merge_strategy="learned",
                                    switch_spatial_to_temporal_mix=True)


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
      return DecoderResBlock(self.channels, **kw)
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
      x = DecoderResBlock(self.out_channels, name=f"resnets_{i}", **kw)(x)
    if self.add_upsample:
      x = jnp.repeat(jnp.repeat(x, 2, axis=2), 2, axis=3)
      x = Conv2D(self.out_channels, name="upsampler", **kw)(x)
    return nn.with_logical_constraint(x, VIDEO_AXES)
