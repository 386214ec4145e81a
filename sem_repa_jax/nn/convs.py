"""Convolutions over channels-last images and videos, with logical axis names on their kernels.

`Conv2D` takes images (B, H, W, C) or videos (B, F, H, W, C), the latter frame by frame (the
frames fold into the batch). `CausalConv3d` is the CogVideoX VAE's: causal in time, carrying the
last frames of one chunk into the next as a cache.
"""
from typing import Any, Callable, Optional, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

from sem_repa_jax.nn.partitioning import param

VIDEO_AXES = ("batch", "frames", "height", "width", "channels")
IMAGE_AXES = ("batch", "height", "width", "channels")


def spatial_axes(x):
  """The logical axis names of a channels-last image (B, H, W, C) or video (B, F, H, W, C)."""
  return VIDEO_AXES if x.ndim == 5 else IMAGE_AXES
Padding = Union[int, Sequence[tuple]]


class Conv2D(nn.Module):
  """2D convolution; on a video, the same convolution applied to every frame.

  padding: an int (that many zeros on every side; the default keeps the size of a stride-1 odd
  kernel) or ((top, bottom), (left, right)).
  """
  features: int
  kernel_size: Sequence[int] = (3, 3)
  strides: int = 1
  padding: Optional[Padding] = None
  use_bias: bool = True
  kernel_init: Callable = nn.initializers.lecun_normal()
  kernel_axes: Sequence[Optional[str]] = (None, None, "conv_in", "conv_out")
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def _padding(self):
    if self.padding is None:
      return [((k - 1) // 2,) * 2 for k in self.kernel_size]
    if isinstance(self.padding, int):
      return [(self.padding,) * 2] * 2
    return [tuple(p) for p in self.padding]

  @nn.compact
  def __call__(self, x):
    if x.ndim not in (4, 5):
      raise ValueError(f"Conv2D takes (B, H, W, C) or (B, F, H, W, C), got {x.shape}")
    cin = x.shape[-1]
    kernel = param(self, "kernel", self.kernel_init, tuple(self.kernel_size) + (cin, self.features),
                   self.kernel_axes, self.param_dtype)
    lead = x.shape[:-3]
    y = jax.lax.conv_general_dilated(x.reshape(-1, *x.shape[-3:]).astype(self.dtype),
                                     kernel.astype(self.dtype), (self.strides,) * 2,
                                     self._padding(), dimension_numbers=("NHWC", "HWIO", "NHWC"))
    if self.use_bias:
      bias = param(self, "bias", nn.initializers.zeros, (self.features,),
                   (self.kernel_axes[-1],), self.param_dtype)
      y = y + bias.astype(self.dtype)
    return y.reshape(*lead, *y.shape[1:])


class CausalConv3d(nn.Module):
  """CogVideoXCausalConv3d: k_t - 1 frames of left time padding, zero spatial padding.

  `(x, cache) -> (y, cache)`. The time padding is the first frame repeated (first chunk, cache
  None) or the cache, i.e. the last k_t - 1 frames of the previous chunk's padded input.
  impl: 'taps' sums k_t per-frame 2D convolutions over the time taps (on XLA:CPU 1.3x faster than
  its 3D convolution, at the cost of one more chunk-sized buffer); 'conv3d' is one 3D convolution
  (least memory; the natural choice where cuDNN runs it). A 1x1x1 kernel is a pointwise map
  (diffusers' plain Conv3d shortcuts): no padding, no cache.
  """
  features: int
  kernel_size: tuple = (3, 3, 3)
  impl: str = "taps"
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, cache=None):
    kt, kh, kw = self.kernel_size
    cin = x.shape[-1]
    kernel = param(self, "kernel", nn.initializers.lecun_normal(), (kt, kh, kw, cin, self.features),
                   (None, None, None, "conv_in", "conv_out"), self.param_dtype)
    bias = param(self, "bias", nn.initializers.zeros, (self.features,), ("conv_out",),
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
