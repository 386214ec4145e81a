"""Building blocks of the CogVideoX 3D causal VAE (diffusers `autoencoder_kl_cogvideox.py`).

Videos are channels-last (B, F, H, W, C). Every block that holds a causal convolution takes the
conv cache of the previous frame chunk (or None for the first chunk) and returns its own, as a
nested dict of arrays whose shapes do not depend on the chunk length: that dict is the carry of
the scan over chunks. GroupNorm takes its statistics across the frames of the chunk it sees, which
is why frame chunking changes the numbers and has to follow diffusers exactly.
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from sem_repa_jax.nn.convs import VIDEO_AXES, CausalConv3d, Conv2D
from sem_repa_jax.nn.norms import GroupNorm
from sem_repa_jax.nn.resnet import ResnetBlock

Dtype = Any


def nearest_indices(in_size: int, out_size: int) -> np.ndarray:
  """Source index of each output position of PyTorch `F.interpolate(mode='nearest', size=...)`."""
  if in_size == out_size:
    return np.arange(out_size)
  scale = np.float32(in_size) / np.float32(out_size)
  src = np.floor(np.arange(out_size, dtype=np.float32) * scale).astype(np.int64)
  return np.minimum(src, in_size - 1)


def nearest_resize(x, axis: int, out_size: int):
  """Nearest-neighbour resize of one axis, as PyTorch computes it."""
  in_size = x.shape[axis]
  if out_size == in_size:
    return x
  if out_size % in_size == 0:
    return jnp.repeat(x, out_size // in_size, axis=axis)
  return jnp.take(x, jnp.asarray(nearest_indices(in_size, out_size)), axis=axis)


def modulate(x, y, b):
  """x * resize(y) + resize(b), y and b nearest-resized to x's (frames, height, width) the way
  diffusers' SpatialNorm3D resizes zq: an odd frame count > 1 resizes the first frame on its own.

  Integer ratios are written as a broadcast over a blocked view of x, so the resized y and b are
  never materialized and the whole expression fuses with the normalization before it.
  """
  f = x.shape[1]
  if f > 1 and f % 2 == 1:
    return jnp.concatenate([modulate(x[:, :1], y[:, :1], b[:, :1]),
                            modulate(x[:, 1:], y[:, 1:], b[:, 1:])], axis=1)
  big, small = x.shape[1:4], y.shape[1:4]
  if all(n % m == 0 for n, m in zip(big, small)):
    (ft, ht, wt), (fs, hs, ws) = big, small
    blocked = x.reshape(x.shape[0], fs, ft // fs, hs, ht // hs, ws, wt // ws, x.shape[-1])
    expand = lambda a: a[:, :, None, :, None, :, None, :]
    return (blocked * expand(y) + expand(b)).reshape(x.shape)
  for axis, size in zip((1, 2, 3), big):
    y, b = nearest_resize(y, axis, size), nearest_resize(b, axis, size)
  return x * y + b


class SpatialNorm3D(nn.Module):
  """CogVideoXSpatialNorm3D: GroupNorm(f) * conv_y(zq) + conv_b(zq), zq resized to f.

  The 1x1x1 convolutions are applied at the latent resolution before the nearest resize: a
  pointwise map commutes with nearest resizing, so the result is the same at a fraction of the cost.
  """
  groups: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, f, zq):
    c = f.shape[-1]
    kw = dict(kernel_size=(1, 1, 1), dtype=jnp.float32, param_dtype=self.param_dtype)
    y, _ = CausalConv3d(c, name="conv_y", **kw)(zq)
    b, _ = CausalConv3d(c, name="conv_b", **kw)(zq)
    norm = GroupNorm(self.groups, 1e-6, dtype=jnp.float32, param_dtype=self.param_dtype,
                     name="norm_layer")(f)
    return modulate(norm, y, b).astype(self.dtype)


class ResnetBlock3D(ResnetBlock):
  """CogVideoXResnetBlock3D without time embedding: causal convolutions, GroupNorm across frames,
  or SpatialNorm3D on the latents zq (the norm argument) in the decoder."""
  spatial_norm: bool = False
  conv_impl: str = "taps"
  kernel_size: tuple = (3, 3, 3)

  def norm(self, name, x, zq=None):
    if self.spatial_norm:
      return SpatialNorm3D(self.groups, self.dtype, self.param_dtype, name=name)(x, zq)
    return GroupNorm(self.groups, self.eps, dtype=self.dtype, param_dtype=self.param_dtype,
                     name=name)(x)

  def conv(self, name, x, features, kernel_size, cache=None):
    return CausalConv3d(features, tuple(kernel_size), self.conv_impl, self.dtype, self.param_dtype,
                        name=name)(x, cache)


def compress_time(x):
  """Temporal x2 average pooling; an odd frame count keeps the first frame as it is."""
  f = x.shape[1]
  if f % 2 == 1:
    first, rest = x[:, :1], x[:, 1:]
    if rest.shape[1] == 0:
      return first
    rest = (rest[:, 0::2] + rest[:, 1::2]) / 2
    return jnp.concatenate([first, rest], axis=1)
  return (x[:, 0::2] + x[:, 1::2]) / 2


def upsample_nearest(x, compress_time: bool):
  """Nearest x2 of H and W; with compress_time also x2 of frames, except a lone first frame."""
  f = x.shape[1]
  if compress_time and f > 1:
    if f % 2 == 1:
      first = upsample_nearest(x[:, :1], False)
      rest = upsample_nearest(x[:, 1:], True)
      return jnp.concatenate([first, rest], axis=1)
    x = jnp.repeat(x, 2, axis=1)
  return jnp.repeat(jnp.repeat(x, 2, axis=2), 2, axis=3)


class DownBlock3D(nn.Module):
  """CogVideoXDownBlock3D: resnets, then an optional downsampler (no cache after it)."""
  out_channels: int
  num_layers: int
  groups: int
  eps: float
  add_downsample: bool
  compress_time: bool
  conv_impl: str = "taps"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, cache=None):
    cache = cache or {}
    new_cache = {}
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    for i in range(self.num_layers):
      key = f"resnets_{i}"
      x, new_cache[key] = ResnetBlock3D(self.out_channels, self.groups, self.eps,
                                        conv_impl=self.conv_impl, name=key, **kw)(
                                            x, cache=cache.get(key))
    if self.add_downsample:
      # CogVideoXDownsample3D: optional time pooling, pad (0,1,0,1), Conv2d k3 s2 per frame.
      if self.compress_time:
        x = compress_time(x)
      x = Conv2D(self.out_channels, (3, 3), 2, ((0, 1), (0, 1)), name="downsampler", **kw)(x)
    return x, new_cache


class UpBlock3D(nn.Module):
  """CogVideoXUpBlock3D (also the mid block, with add_upsample False): SpatialNorm3D resnets."""
  out_channels: int
  num_layers: int
  groups: int
  eps: float
  add_upsample: bool
  compress_time: bool
  conv_impl: str = "taps"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, zq, cache=None):
    cache = cache or {}
    new_cache = {}
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    for i in range(self.num_layers):
      key = f"resnets_{i}"
      x, new_cache[key] = ResnetBlock3D(self.out_channels, self.groups, self.eps,
                                        spatial_norm=True, conv_impl=self.conv_impl, name=key,
                                        **kw)(x, None, zq, cache=cache.get(key))
    if self.add_upsample:
      # CogVideoXUpsample3D: nearest x2 (time too when compress_time), Conv2d k3 p1 per frame.
      x = upsample_nearest(x.astype(self.dtype), self.compress_time)
      x = Conv2D(self.out_channels, name="upsampler", **kw)(x)
      x = nn.with_logical_constraint(x, VIDEO_AXES)
    return x, new_cache
