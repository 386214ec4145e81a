"""The down, mid and up blocks of SVD's U-Net (diffusers `unet_3d_blocks.py`, *SpatioTemporal).

A down block is `num_layers` spatio-temporal ResNets, each followed by a spatio-temporal transformer
when the block has cross-attention (CrossAttnDownBlockSpatioTemporal), then a stride-2 3x3
convolution (padding 1 on every side, diffusers' Downsample2D); it returns every intermediate
state as a skip connection. An up block concatenates one skip per layer to its input (channels
last), and upsamples by nearest neighbours to the size of the next skip (Upsample2D with the
forwarded size: 2x, or the odd size of the matching down level) before a 3x3 convolution. The mid
block is ResNet, transformer, ResNet. Each ResNet and transformer is rematerialized by the
configured policy (the blocks differ in width, so they are not scanned).
"""
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from sem_repa_jax.models.svd.spatio_temporal_resnet import SpatioTemporalResBlock
from sem_repa_jax.models.svd.transformer_temporal import TransformerSpatioTemporalModel
from sem_repa_jax.nn.convs import Conv2D, spatial_axes
from sem_repa_jax.nn.stacking import remat


def upsample_nearest(x, size: Sequence[int]):
  """torch `interpolate(mode='nearest', size=size)` on (..., H, W, C): source index
  floor(i * H_in / H_out) in float32, or each row and column twice when the size doubles."""
  index = []
  for n_in, n_out in zip(x.shape[-3:-1], size):
    if n_out == 2 * n_in:
      index.append(np.arange(n_out) // 2)
    else:
      scale = np.float32(n_in) / np.float32(n_out)
      index.append(np.minimum(np.floor(np.arange(n_out, dtype=np.float32) * scale).astype(int),
                              n_in - 1))
  return jnp.take(jnp.take(x, index[0], axis=-3), index[1], axis=-2)


def transformer_block_paths(cross_down: Sequence[bool], cross_up: Sequence[bool],
                            layers_per_block: Sequence[int], transformer_layers: Sequence[int],
                            widths: Sequence[int]) -> tuple:
  """(diffusers path, width) of every spatial BasicTransformerBlock of a U-Net (SD's or SVD's) in
  forward order: 'down_blocks.0.attentions.0.transformer_blocks.0', ..., 'mid_block.attentions.0
  .transformer_blocks.0', ..., 'up_blocks.3.attentions.2.transformer_blocks.0'."""
  n, paths = len(widths), []

  def blocks(prefix, attentions, layers, width):
    paths.extend((f"{prefix}.attentions.{a}.transformer_blocks.{t}", width)
                 for a in range(attentions) for t in range(layers))
  for i, cross in enumerate(cross_down):
    if cross:
      blocks(f"down_blocks.{i}", layers_per_block[i], transformer_layers[i], widths[i])
  blocks("mid_block", 1, transformer_layers[-1], widths[-1])
  for i, cross in enumerate(cross_up):
    if cross:
      j = n - 1 - i
      blocks(f"up_blocks.{i}", layers_per_block[j] + 1, transformer_layers[j], widths[j])
  return tuple(paths)


def through_levels(x, down, mid, up, layers_per_block: Sequence[int], temb, context, indicator,
                   reference=None):
  """The U-Net's path from conv_in's output x through its down, mid and up blocks (of this file's
  calling conventions), with the skip bookkeeping: up block i mirrors down level n - 1 - i and
  takes its layers_per_block + 1 skips, last first, and upsamples to the (h, w) of the next skip
  (2x, or the odd size of that level, as diffusers forwards it).

  reference: None (the blocks are called as always), or {'down_blocks.i' | 'mid_block' |
  'up_blocks.i': per attention, per transformer layer, reference tokens}, handed to each block
  as its last argument (None for blocks without attentions)."""
  ref = (lambda key: ()) if reference is None else (lambda key: (reference.get(key),))
  skips = [x]
  for i, block in enumerate(down):
    x, res = block(x, temb, context, indicator, *ref(f"down_blocks.{i}"))
    skips.extend(res)
  x = mid(x, temb, context, indicator, *ref("mid_block"))
  n = len(up)
  for i, block in enumerate(up):
    layers = layers_per_block[n - 1 - i] + 1
    res, skips = skips[-layers:], skips[:-layers]
    size = tuple(skips[-1].shape[-3:-1]) if i < n - 1 else None
    x = block(x, tuple(res), temb, context, indicator, size, *ref(f"up_blocks.{i}"))
  return x


class _Block(nn.Module):
  """What every block shares: its fields and the two rematerialized sub-blocks."""
  out_channels: int
  num_layers: int = 1
  cross_attention: bool = True
  heads: int = 1
  transformer_layers: int = 1
  resnet_eps: float = 1e-6
  resample: bool = True
  extra_context_tokens: int = 0
  attention: str = "xla"
  remat_policy: str = "none"
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  id_alignment: str = "none"
  id_in_temporal: bool = False
  id_zero_init: bool = False

  def resnet(self, name, x, temb, indicator):
    cls = remat(SpatioTemporalResBlock, self.remat_policy)
    return cls(self.out_channels, self.resnet_eps, dtype=self.dtype, param_dtype=self.param_dtype,
               name=name)(x, temb, indicator)

  def transformer(self, name, x, context, indicator, reference=None):
    cls = remat(TransformerSpatioTemporalModel, self.remat_policy)
    return cls(self.heads, self.transformer_layers, self.extra_context_tokens, self.attention,
               self.dtype, self.param_dtype, self.id_alignment, self.id_in_temporal,
               self.id_zero_init, name=name)(x, context, indicator, reference)

  def attend(self, name, i, x, context, indicator, reference):
    """Attention i of the block; reference (per attention) only when given (SD's blocks take
    none)."""
    args = () if reference is None else (reference[i],)
    return self.transformer(name, x, context, indicator, *args)


class DownBlock(_Block):
  """`(x, temb, context, indicator, reference=None) -> (x, skips)`; resample: the downsampler
  (all but the last)."""

  @nn.compact
  def __call__(self, x, temb, context, indicator, reference=None):
    skips = []
    for i in range(self.num_layers):
      x = self.resnet(f"resnets_{i}", x, temb, indicator)
      if self.cross_attention:
        x = self.attend(f"attentions_{i}", i, x, context, indicator, reference)
      skips.append(x)
    if self.resample:
      x = Conv2D(self.out_channels, (3, 3), strides=2, padding=1, dtype=self.dtype,
                 param_dtype=self.param_dtype, name="downsampler")(x)
      x = nn.with_logical_constraint(x, spatial_axes(x))
      skips.append(x)
    return x, tuple(skips)


class UpBlock(_Block):
  """`(x, skips, temb, context, indicator, size, reference=None) -> x`: skips[-1] joins the first
  layer; resample: upsample to `size` (h, w) (all but the last block)."""

  @nn.compact
  def __call__(self, x, skips, temb, context, indicator, size=None, reference=None):
    for i in range(self.num_layers):
      x = jnp.concatenate([x, skips[-1 - i].astype(x.dtype)], axis=-1)
      x = self.resnet(f"resnets_{i}", x, temb, indicator)
      if self.cross_attention:
        x = self.attend(f"attentions_{i}", i, x, context, indicator, reference)
    if self.resample:
      x = Conv2D(self.out_channels, (3, 3), dtype=self.dtype, param_dtype=self.param_dtype,
                 name="upsampler")(upsample_nearest(x, size))
      x = nn.with_logical_constraint(x, spatial_axes(x))
    return x


class MidBlock(_Block):
  """`(x, temb, context, indicator, reference=None) -> x`: ResNet, then num_layers x
  (transformer, ResNet)."""

  @nn.compact
  def __call__(self, x, temb, context, indicator, reference=None):
    x = self.resnet("resnets_0", x, temb, indicator)
    for i in range(self.num_layers):
      x = self.attend(f"attentions_{i}", i, x, context, indicator, reference)
      x = self.resnet(f"resnets_{i + 1}", x, temb, indicator)
    return x
