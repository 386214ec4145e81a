"""Position and timestep embeddings shared by the diffusion models, equal to diffusers' functions.

Tables that depend only on shapes (3D sincos, 3D RoPE frequencies) are built with numpy at trace
time, in the precision diffusers uses (float64 sincos, float32 RoPE), and enter the graph as
constants. The timestep sinusoid and the rotation itself are jnp functions of traced values;
`TimestepEmbedding` is the learned MLP diffusers puts on the sinusoid.
"""
import math
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from sem_repa_jax.nn.dense import dense


def get_timestep_embedding(timesteps, embedding_dim: int, flip_sin_to_cos: bool = False,
                           downscale_freq_shift: float = 1.0, scale: float = 1.0,
                           max_period: float = 10000.0):
  """DDPM sinusoid of (N,) timesteps -> (N, embedding_dim) float32; [cos, sin] when flipped."""
  timesteps = jnp.asarray(timesteps)
  if timesteps.ndim != 1:
    raise ValueError(f"timesteps must be a 1-D array, got shape {timesteps.shape}")
  half_dim = embedding_dim // 2
  # Frequencies are shape-only: computed like torch does (float32 ops) and kept as a constant.
  exponent = np.float32(-math.log(max_period)) * np.arange(half_dim, dtype=np.float32)
  exponent = exponent / np.float32(half_dim - downscale_freq_shift)
  freqs = np.exp(exponent.astype(np.float64)).astype(np.float32)
  emb = timesteps.astype(jnp.float32)[:, None] * freqs[None, :]
  emb = np.float32(scale) * emb
  emb = jnp.concatenate([jnp.sin(emb), jnp.cos(emb)], axis=-1)
  if flip_sin_to_cos:
    emb = jnp.concatenate([emb[:, half_dim:], emb[:, :half_dim]], axis=-1)
  if embedding_dim % 2 == 1:
    emb = jnp.pad(emb, ((0, 0), (0, 1)))
  return emb


class TimestepEmbedding(nn.Module):
  """diffusers' TimestepEmbedding: linear_1 -> act -> linear_2 (to out_features, default features)."""
  features: int
  out_features: Optional[int] = None
  act: Callable = nn.silu
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, e):
    e = dense(self.features, (None, None), "linear_1", self.dtype, self.param_dtype)(e)
    return dense(self.out_features or self.features, (None, None), "linear_2", self.dtype,
                 self.param_dtype)(self.act(e))


def get_1d_sincos_pos_embed_from_grid(embed_dim: int, pos) -> np.ndarray:
  """(M,) positions -> (M, embed_dim) [sin | cos] in float64."""
  if embed_dim % 2:
    raise ValueError(f"embed_dim must be even, got {embed_dim}")
  omega = np.arange(embed_dim // 2, dtype=np.float64) / (embed_dim / 2.0)
  omega = 1.0 / 10000 ** omega
  out = np.outer(np.asarray(pos, np.float64).reshape(-1), omega)
  return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def get_2d_sincos_pos_embed_from_grid(embed_dim: int, grid) -> np.ndarray:
  """grid (2, ...) -> (prod(...), embed_dim): first half encodes grid[0], second half grid[1]."""
  if embed_dim % 2:
    raise ValueError(f"embed_dim must be even, got {embed_dim}")
  emb_0 = get_1d_sincos_pos_embed_from_grid(embed_dim // 2, grid[0])
  emb_1 = get_1d_sincos_pos_embed_from_grid(embed_dim // 2, grid[1])
  return np.concatenate([emb_0, emb_1], axis=1)


def get_3d_sincos_pos_embed(embed_dim: int, spatial_size, temporal_size: int,
                            spatial_interpolation_scale: float = 1.0,
                            temporal_interpolation_scale: float = 1.0) -> np.ndarray:
  """CogVideoX 3D sincos table (T, H*W, embed_dim) in float64.

  spatial_size is (width, height) as in diffusers. Channels are [temporal D/4 | spatial 3D/4], the
  spatial part [w-coordinate | h-coordinate], tokens ordered (h, w). Positions are float32 (as torch
  builds them) before the float64 sinusoid.
  """
  if embed_dim % 4:
    raise ValueError(f"embed_dim must be divisible by 4, got {embed_dim}")
  if isinstance(spatial_size, int):
    spatial_size = (spatial_size, spatial_size)
  width, height = spatial_size
  dim_spatial, dim_temporal = 3 * embed_dim // 4, embed_dim // 4
  s = np.float32(spatial_interpolation_scale)
  grid_w = np.arange(width, dtype=np.float32) / s
  grid_h = np.arange(height, dtype=np.float32) / s
  grid = np.stack(np.meshgrid(grid_w, grid_h, indexing="xy"), axis=0)   # (2, H, W): [w, h]
  spatial = get_2d_sincos_pos_embed_from_grid(dim_spatial, grid.reshape(2, -1))
  grid_t = np.arange(temporal_size, dtype=np.float32) / np.float32(temporal_interpolation_scale)
  temporal = get_1d_sincos_pos_embed_from_grid(dim_temporal, grid_t)
  spatial = np.broadcast_to(spatial[None], (temporal_size,) + spatial.shape)
  temporal = np.broadcast_to(temporal[:, None], (temporal_size, height * width, dim_temporal))
  return np.concatenate([temporal, spatial], axis=-1)


def get_resize_crop_region_for_grid(src: Sequence[int], tgt_width: int, tgt_height: int):
  """CogVideoX pipeline helper: the centred region of a (tgt_h, tgt_w) base grid that an (h, w)
  grid of the same aspect covers; Python round (half to even) as in diffusers."""
  th, tw = tgt_height, tgt_width
  h, w = src
  if h / w > th / tw:
    resize_height = th
    resize_width = int(round(th / h * w))
  else:
    resize_width = tw
    resize_height = int(round(tw / w * h))
  crop_top = int(round((th - resize_height) / 2.0))
  crop_left = int(round((tw - resize_width) / 2.0))
  return (crop_top, crop_left), (crop_top + resize_height, crop_left + resize_width)


def _linspace_float32(start: float, end: float, steps: int) -> np.ndarray:
  """torch.linspace in float32: from start below the midpoint and from end above it."""
  start, end = np.float32(start), np.float32(end)
  if steps == 1:
    return np.array([start], np.float32)
  step = np.float32((end - start) / np.float32(steps - 1))
  idx = np.arange(steps)
  low = start + step * idx.astype(np.float32)
  high = end - step * (steps - idx - 1).astype(np.float32)
  return np.where(idx < steps // 2, low, high).astype(np.float32)


def get_1d_rotary_pos_embed(dim: int, pos, theta: float = 10000.0):
  """(S,) positions -> (cos, sin), each (S, dim) float32, repeat-interleaved (flux/cogvideox)."""
  if dim % 2:
    raise ValueError(f"rotary dim must be even, got {dim}")
  freqs = 1.0 / (np.float32(theta) ** (np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)))
  freqs = np.outer(np.asarray(pos, np.float32), freqs.astype(np.float32)).astype(np.float32)
  return (np.repeat(np.cos(freqs), 2, axis=1).astype(np.float32),
          np.repeat(np.sin(freqs), 2, axis=1).astype(np.float32))


def get_3d_rotary_pos_embed(embed_dim: int, crops_coords, grid_size: Sequence[int],
                            temporal_size: int, theta: float = 10000.0, grid_type: str = "linspace",
                            max_size: Optional[Sequence[int]] = None):
  """CogVideoX 3D RoPE: (cos, sin), each (T*H*W, embed_dim) float32, tokens ordered (t, h, w).

  The head dim is split t: D/4, h: 3D/8, w: 3D/8. grid_type 'linspace' (CogVideoX 1.0) spreads the
  grid over `crops_coords` ((top, left), (bottom, right)); 'slice' (1.5) takes arange(max)[:n].
  """
  grid_h_size, grid_w_size = grid_size
  if grid_type == "linspace":
    start, stop = crops_coords
    grid_h = _linspace_float32(start[0], stop[0] * (grid_h_size - 1) / grid_h_size, grid_h_size)
    grid_w = _linspace_float32(start[1], stop[1] * (grid_w_size - 1) / grid_w_size, grid_w_size)
    grid_t = _linspace_float32(0, temporal_size * (temporal_size - 1) / temporal_size, temporal_size)
  elif grid_type == "slice":
    if max_size is None:
      raise ValueError("grid_type='slice' needs max_size=(max_h, max_w)")
    max_h, max_w = max_size
    if grid_h_size > max_h or grid_w_size > max_w:
      raise ValueError(f"RoPE grid {grid_h_size}x{grid_w_size} exceeds the model's maximum "
                       f"{max_h}x{max_w} (sample_height/width // patch_size)")
    grid_h = np.arange(max_h, dtype=np.float32)[:grid_h_size]
    grid_w = np.arange(max_w, dtype=np.float32)[:grid_w_size]
    grid_t = np.arange(temporal_size, dtype=np.float32)
  else:
    raise ValueError(f"grid_type must be 'linspace' or 'slice', got {grid_type!r}")
  dim_t, dim_h, dim_w = embed_dim // 4, embed_dim // 8 * 3, embed_dim // 8 * 3
  parts = [get_1d_rotary_pos_embed(d, g, theta) for d, g in
           ((dim_t, grid_t), (dim_h, grid_h), (dim_w, grid_w))]

  def combine(t, h, w):
    shape = (temporal_size, grid_h_size, grid_w_size)
    out = np.concatenate([np.broadcast_to(t[:, None, None], shape + t.shape[-1:]),
                          np.broadcast_to(h[None, :, None], shape + h.shape[-1:]),
                          np.broadcast_to(w[None, None, :], shape + w.shape[-1:])], axis=-1)
    return out.reshape(-1, out.shape[-1])

  return (combine(*(p[0] for p in parts)), combine(*(p[1] for p in parts)))


def apply_rotary_emb(x, freqs_cis, sequence_dim: int = 1):
  """Rotates interleaved pairs (x0, x1) -> (x0 c - x1 s, x1 c + x0 s) in float32.

  x: (B, S, N, D) for sequence_dim=1 (this project's layout) or (B, N, S, D) for 2 (diffusers').
  freqs_cis: (cos, sin), each (S, D). Returns x's dtype.
  """
  cos, sin = (jnp.asarray(f, jnp.float32) for f in freqs_cis)
  if sequence_dim == 1:
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]
  elif sequence_dim == 2:
    cos, sin = cos[None, None], sin[None, None]
  else:
    raise ValueError(f"sequence_dim={sequence_dim} but should be 1 or 2")
  xf = x.astype(jnp.float32)
  pairs = xf.reshape(*x.shape[:-1], -1, 2)
  rotated = jnp.stack([-pairs[..., 1], pairs[..., 0]], axis=-1).reshape(x.shape)
  return (xf * cos + rotated * sin).astype(x.dtype)
