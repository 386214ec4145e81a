"""Building blocks of the CogVideoX 3D causal VAE (diffusers `autoencoder_kl_cogvideox.py`).

Videos are channels-last (B, F, H, W, C). Every block that holds a causal convolution takes the
conv cache of the previous frame chunk (or None for the first chunk) and returns its own, as a
nested dict of arrays whose shapes do not depend on the chunk length: that dict is the carry of
the scan over chunks.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Dtype = Any
VIDEO_AXES = ("batch", "frames", "height", "width", "channels")


def _param(module, name, init, shape, names, dtype):
  return module.param(name, nn.with_logical_partitioning(init, names), shape, dtype)


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


class GroupNorm(nn.Module):
  """GroupNorm over (frames, height, width, channels of a group), statistics in float32.

  The statistics span every frame of the chunk it sees, which is why frame chunking changes the
  numbers and has to follow diffusers exactly.
  """
  groups: int
  eps: float
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    scale = _param(self, "scale", nn.initializers.ones, (c,), ("channels",), self.param_dtype)
    bias = _param(self, "bias", nn.initializers.zeros, (c,), ("channels",), self.param_dtype)
    xf = x.astype(jnp.float32).reshape(x.shape[0], -1, self.groups, c // self.groups)
    mean = jnp.mean(xf, axis=(1, 3), keepdims=True)
    var = jnp.mean(jnp.square(xf - mean), axis=(1, 3), keepdims=True)
    y = ((xf - mean) * jax.lax.rsqrt(var + self.eps)).reshape(x.shape)
    return (y * scale.astype(jnp.float32) + bias.astype(jnp.float32)).astype(self.dtype)


class CausalConv3d(nn.Module):
  """CogVideoXCausalConv3d: k_t - 1 frames of left time padding, zero spatial padding.

  The time padding is the first frame repeated (first chunk) or the cache, i.e. the last k_t - 1
  frames of the previous chunk's padded input.
  impl: 'taps' sums k_t per-frame 2D convolutions over the time taps (on XLA:CPU 1.3x faster than
  its 3D convolution, at the cost of one more chunk-sized buffer); 'conv3d' is one 3D convolution
  (least memory; the natural choice where cuDNN runs it).
  """
  features: int
  kernel_size: tuple = (3, 3, 3)
  impl: str = "taps"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, cache=None):
    kt, kh, kw = self.kernel_size
    cin = x.shape[-1]
    kernel = _param(self, "kernel", nn.initializers.lecun_normal(), (kt, kh, kw, cin, self.features),
                    (None, None, None, "conv_in", "conv_out"), self.param_dtype)
    bias = _param(self, "bias", nn.initializers.zeros, (self.features,), ("conv_out",),
                  self.param_dtype)
    kernel, bias = kernel.astype(self.dtype), bias.astype(self.dtype)
    x = x.astype(self.dtype)
    if kt == 1 and kh == 1 and kw == 1:
      return jnp.einsum("bfhwc,cd->bfhwd", x, kernel[0, 0, 0]) + bias, None
    if kt > 1:
      head = cache if cache is not None else jnp.repeat(x[:, :1], kt - 1, axis=1)
      x = jnp.concatenate([head.astype(self.dtype), x], axis=1)
      new_cache = x[:, -(kt - 1):]
    else:
      new_cache = None
    b, f, h, w, _ = x.shape
    frames = f - kt + 1
    pad = [((kh - 1) // 2,) * 2, ((kw - 1) // 2,) * 2]
    if self.impl == "conv3d":
      y = jax.lax.conv_general_dilated(x, kernel, (1, 1, 1), [(0, 0)] + pad,
                                       dimension_numbers=("NDHWC", "DHWIO", "NDHWC")) + bias
      return nn.with_logical_constraint(y, VIDEO_AXES), new_cache
    # A loop over the time taps, not a Python unroll: unrolled, XLA hoists every layer's per-tap
    # kernel slice (a copy) to the start of the program and holds a second copy of all weights.
    def tap(y, inputs):
      t, k = inputs
      xt = jax.lax.dynamic_slice_in_dim(x, t, frames, axis=1).reshape(b * frames, h, w, cin)
      return y + jax.lax.conv_general_dilated(xt, k, (1, 1), pad,
                                              dimension_numbers=("NHWC", "HWIO", "NHWC")), None

    y0 = jnp.zeros((b * frames, h, w, self.features), self.dtype)
    y, _ = jax.lax.scan(tap, y0, (jnp.arange(kt), kernel))
    y = y.reshape(b, frames, *y.shape[1:]) + bias
    return nn.with_logical_constraint(y, VIDEO_AXES), new_cache


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
    norm = GroupNorm(self.groups, 1e-6, jnp.float32, self.param_dtype, name="norm_layer")(f)
    return modulate(norm, y, b).astype(self.dtype)


class ResnetBlock3D(nn.Module):
  """CogVideoXResnetBlock3D without time embedding; SpatialNorm3D when zq is given (decoder)."""
  out_channels: int
  groups: int
  eps: float
  spatial_norm: bool = False
  conv_impl: str = "taps"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def _norm(self, name, x, zq):
    if self.spatial_norm:
      return SpatialNorm3D(self.groups, self.dtype, self.param_dtype, name=name)(x, zq)
    return GroupNorm(self.groups, self.eps, self.dtype, self.param_dtype, name=name)(x)

  @nn.compact
  def __call__(self, x, zq=None, cache=None):
    cache = cache or {}
    new_cache = {}
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    h = nn.silu(self._norm("norm1", x, zq))
    conv = dict(impl=self.conv_impl, **kw)
    h, new_cache["conv1"] = CausalConv3d(self.out_channels, name="conv1", **conv)(
        h, cache.get("conv1"))
    h = nn.silu(self._norm("norm2", h, zq))
    h, new_cache["conv2"] = CausalConv3d(self.out_channels, name="conv2", **conv)(
        h, cache.get("conv2"))
    if x.shape[-1] != self.out_channels:
      # A plain Conv3d(k=1) in diffusers, not a causal one: no cache.
      x, _ = CausalConv3d(self.out_channels, (1, 1, 1), name="conv_shortcut", **kw)(x)
    return (h + x).astype(self.dtype), new_cache


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


def _per_frame_conv3x3(module, x, features: int, stride: int, padding):
  """A 3x3 Conv2d applied to every frame of x (B, F, H, W, C), with `module`'s 'kernel' and
  'bias' parameters (the layout of diffusers' Conv2d in the down/up-sampling blocks)."""
  cin = x.shape[-1]
  kernel = _param(module, "kernel", nn.initializers.lecun_normal(), (3, 3, cin, features),
                  (None, None, "conv_in", "conv_out"), module.param_dtype).astype(module.dtype)
  bias = _param(module, "bias", nn.initializers.zeros, (features,), ("conv_out",),
                module.param_dtype).astype(module.dtype)
  b, f, h, w, _ = x.shape
  y = jax.lax.conv_general_dilated(x.reshape(b * f, h, w, cin).astype(module.dtype), kernel,
                                   (stride, stride), padding,
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
  return (y + bias).reshape(b, f, *y.shape[1:])


class Downsample3D(nn.Module):
  """CogVideoXDownsample3D: optional time pooling, pad (0,1,0,1), Conv2d k3 s2 per frame."""
  features: int
  compress_time: bool
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    if self.compress_time:
      x = compress_time(x)
    return _per_frame_conv3x3(self, x, self.features, 2, [(0, 1), (0, 1)])


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


class Upsample3D(nn.Module):
  """CogVideoXUpsample3D: nearest x2 (time too when compress_time), Conv2d k3 p1 per frame."""
  features: int
  compress_time: bool
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = upsample_nearest(x.astype(self.dtype), self.compress_time)
    y = _per_frame_conv3x3(self, x, self.features, 1, [(1, 1), (1, 1)])
    return nn.with_logical_constraint(y, VIDEO_AXES)


class DownBlock3D(nn.Module):
  """CogVideoXDownBlock3D: resnets, then an optional Downsample3D (no cache after it)."""
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
                                            x, None, cache.get(key))
    if self.add_downsample:
      x = Downsample3D(self.out_channels, self.compress_time, name="downsampler", **kw)(x)
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
      x, new_cache[key] = ResnetBlock3D(self.out_channels, self.groups, self.eps, True,
                                        self.conv_impl, name=key, **kw)(x, zq, cache.get(key))
    if self.add_upsample:
      x = Upsample3D(self.out_channels, self.compress_time, name="upsampler", **kw)(x)
    return x, new_cache
