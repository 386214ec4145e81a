"""The ResNet block of diffusion U-Nets and VAEs (diffusers' ResnetBlock2D and its relatives).

    h = conv1(act(norm1(x)))  (+ time_emb_proj(act(temb)) per channel)
    h = conv2(dropout(act(norm2(h))))
    y = (shortcut(x) + h) / output_scale_factor   (shortcut: a 1x1 conv when the width changes)

The norm and the convolution are methods a family overrides (the CogVideoX VAE: spatially
modulated norms and causal convolutions); by default GroupNorm and `Conv2D`, which take images
(B, H, W, C) or videos (B, F, H, W, C) frame by frame. A convolution may carry a cache from one
chunk of frames to the next (causal ones do): `__call__` returns (y, cache), the cache a dict by
convolution name, None for stateless convolutions.
"""
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from sem_repa_jax.nn.convs import Conv2D
from sem_repa_jax.nn.dense import dense
from sem_repa_jax.nn.norms import GroupNorm


class ResnetBlock(nn.Module):
  """`(x, temb=None, *norm_args, cache=None, deterministic=True) -> (y, cache)`.

  groups is capped at the channel count (a narrow block normalizes each channel on its own);
  on videos the GroupNorm statistics are per frame, or across frames with norm_per_frame=False.
  norm_args are passed to `norm` (the VAE's latents zq); temb (B, D), or (B, F, D) on videos.
  """
  out_channels: int
  groups: int = 32
  eps: float = 1e-6
  dropout: float = 0.0
  kernel_size: Sequence[int] = (3, 3)
  shortcut_name: str = "conv_shortcut"
  output_scale_factor: float = 1.0
  act: Callable = nn.silu
  norm_per_frame: bool = True
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def norm(self, name: str, x, *norm_args):
    """Normalization before each convolution, output in float32."""
    return GroupNorm(min(self.groups, x.shape[-1]), self.eps, self.norm_per_frame and x.ndim == 5,
                     dtype=jnp.float32, param_dtype=self.param_dtype, name=name)(x)

  def conv(self, name: str, x, features: int, kernel_size: Sequence[int], cache=None):
    """-> (y, cache): a stateless convolution returns None as its cache."""
    return Conv2D(features, tuple(kernel_size), dtype=self.dtype, param_dtype=self.param_dtype,
                  name=name)(x), None

  @nn.compact
  def __call__(self, x, temb=None, *norm_args, cache=None, deterministic: bool = True):
    cache = cache or {}
    new_cache = {}
    h = self.act(self.norm("norm1", x, *norm_args)).astype(self.dtype)
    h, new_cache["conv1"] = self.conv("conv1", h, self.out_channels, self.kernel_size,
                                      cache.get("conv1"))
    if temb is not None:
      t = dense(self.out_channels, (None, "conv_out"), "time_emb_proj", self.dtype,
                self.param_dtype)(self.act(temb))
      h = h + t.reshape(t.shape[:-1] + (1,) * (h.ndim - t.ndim) + t.shape[-1:])
    h = self.act(self.norm("norm2", h, *norm_args)).astype(self.dtype)
    if self.dropout:
      h = nn.Dropout(self.dropout)(h, deterministic=deterministic)
    h, new_cache["conv2"] = self.conv("conv2", h, self.out_channels, self.kernel_size,
                                      cache.get("conv2"))
    if x.shape[-1] != self.out_channels:
      x, _ = self.conv(self.shortcut_name, x, self.out_channels, (1,) * len(self.kernel_size))
    y = x + h
    if self.output_scale_factor != 1.0:
      y = y / self.output_scale_factor
    return y.astype(self.dtype), new_cache
