"""Stable Diffusion's spatial transformer (diffusers `Transformer2DModel`, continuous input).

    y = proj_in(GroupNorm(x))          tokens (B, H*W, C)
    per layer: y = BasicTransformerBlock(y, context)   self-attention, cross-attention, GEGLU FF
    out = x + proj_out(y)

The block is SVD's spatial BasicTransformerBlock (models/svd/transformer_temporal.py): the same
diffusers module. proj_in / proj_out are Linear in SD 2.x (use_linear_projection) and 1x1 Conv2d
in SD 1.x; a 1x1 convolution over pixels is that same linear map over tokens, so both are one
dense layer here and the converter reads either layout. Each block sows the input of its
self-attention (norm1's output) for the ReferenceNet (unet.reference_features).
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from sem_repa_jax.models.svd.transformer_temporal import BasicTransformerBlock
from sem_repa_jax.nn.convs import IMAGE_AXES
from sem_repa_jax.nn.dense import dense
from sem_repa_jax.nn.norms import GroupNorm

NORM_GROUPS = 32
NORM_EPS = 1e-6   # fixed in diffusers' Transformer2DModel, whatever the U-Net's norm_eps


class Transformer2DModel(nn.Module):
  """`(x (B, H, W, C), context (B, T, D_ctx)) -> (B, H, W, C)`."""
  heads: int
  num_layers: int = 1
  attention: str = "xla"
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, context):
    b, h, w, c = x.shape
    if c % self.heads:
      raise ValueError(f"{c} channels do not split into {self.heads} attention heads")
    y = GroupNorm(NORM_GROUPS, NORM_EPS, dtype=self.dtype, param_dtype=self.param_dtype,
                  name="norm")(x)
    y = dense(c, (None, "embed"), "proj_in", self.dtype, self.param_dtype)(y.reshape(b, h * w, c))
    context = context.astype(self.dtype)
    for i in range(self.num_layers):
      y = BasicTransformerBlock(self.heads, c // self.heads, (), self.attention, self.dtype,
                                self.param_dtype, name=f"transformer_blocks_{i}")(y, context)
    y = dense(c, ("embed", None), "proj_out", self.dtype, self.param_dtype)(y)
    return nn.with_logical_constraint(x + y.reshape(b, h, w, c), IMAGE_AXES)
