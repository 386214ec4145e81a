"""LayerNorm and GroupNorm with float32 statistics and logical axis names on their parameters.

Both compute in float32 whatever the input dtype (two-pass variance, mean((x - mean)^2), as torch
does) and return `dtype`. GroupNorm on videos (B, F, H, W, C) takes its statistics either across
frames, over (F, H, W) of a group (the CogVideoX VAE, SVD's temporal blocks: frame chunking then
changes the numbers), or per frame, over (H, W) (an image GroupNorm applied frame by frame).
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sem_repa_jax.nn.partitioning import param


class LayerNorm(nn.Module):
  """LayerNorm over the last axis; `axis_name` is the logical name of its scale and bias."""
  epsilon: float = 1e-5
  affine: bool = True
  axis_name: str = "embed"
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    xf = x.astype(jnp.float32)
    mean = jnp.mean(xf, axis=-1, keepdims=True)
    y = xf - mean
    mul = jax.lax.rsqrt(jnp.mean(jnp.square(y), axis=-1, keepdims=True) + self.epsilon)
    if self.affine:
      d = x.shape[-1]
      scale = param(self, "scale", nn.initializers.ones, (d,), (self.axis_name,), self.param_dtype)
      mul = mul * scale.astype(jnp.float32)
      y = y * mul
      bias = param(self, "bias", nn.initializers.zeros, (d,), (self.axis_name,), self.param_dtype)
      y = y + bias.astype(jnp.float32)
    else:
      y = y * mul
    return y.astype(self.dtype)


class GroupNorm(nn.Module):
  """GroupNorm over channels-last x: (B, ..., C), statistics of each group over every axis between
  batch and channels, or with per_frame=True on (B, F, H, W, C) over (H, W) of each frame."""
  groups: int
  epsilon: float = 1e-6
  per_frame: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    if c % self.groups:
      raise ValueError(f"GroupNorm: {c} channels do not split into {self.groups} groups")
    if self.per_frame and x.ndim != 5:
      raise ValueError(f"GroupNorm(per_frame=True) takes videos (B, F, H, W, C), got {x.shape}")
    scale = param(self, "scale", nn.initializers.ones, (c,), ("channels",), self.param_dtype)
    bias = param(self, "bias", nn.initializers.zeros, (c,), ("channels",), self.param_dtype)
    lead = int(np.prod(x.shape[:2 if self.per_frame else 1]))
    xf = x.astype(jnp.float32).reshape(lead, -1, self.groups, c // self.groups)
    mean = jnp.mean(xf, axis=(1, 3), keepdims=True)
    var = jnp.mean(jnp.square(xf - mean), axis=(1, 3), keepdims=True)
    y = ((xf - mean) * jax.lax.rsqrt(var + self.epsilon)).reshape(x.shape)
    return (y * scale.astype(jnp.float32) + bias.astype(jnp.float32)).astype(self.dtype)
