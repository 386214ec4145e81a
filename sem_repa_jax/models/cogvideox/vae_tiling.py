"""Spatial tiling of the CogVideoX VAE, as diffusers `tiled_encode` / `tiled_decode` do it.

Overlapping tiles are encoded/decoded separately (each with the full chunk loop over frames) and
blended linearly over the overlap with the tile above and the tile to the left, in raster order,
each blend reading the neighbours as already blended (diffusers blends in place). Tiles of equal
shape go through one `scan`, so memory holds one tile's activations and each tile shape compiles once.
"""
import dataclasses

import flax.linen as nn
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class Tiling:
  """Tile size in pixels (diffusers tile_sample_min_*) and overlap factors (tile_overlap_factor_*)."""
  tile_sample_min_height: int
  tile_sample_min_width: int
  overlap_factor_height: float = 1 / 6
  overlap_factor_width: float = 1 / 5

  def geometry(self, compression: int, decode: bool) -> dict:
    """Tile size and stride on the input, blend extent and kept size on the output, as (h, w)."""
    sample = (self.tile_sample_min_height, self.tile_sample_min_width)
    latent = tuple(int(s / compression) for s in sample)
    factors = (self.overlap_factor_height, self.overlap_factor_width)
    tile_in, tile_out = (latent, sample) if decode else (sample, latent)
    stride = tuple(int(t * (1 - f)) for t, f in zip(tile_in, factors))
    blend = tuple(int(t * f) for t, f in zip(tile_out, factors))
    if min(stride) < 1:
      raise ValueError(f"{self}: tiles of {tile_in} with these overlaps give a stride of {stride}")
    return dict(tile=tile_in, stride=stride, blend=blend,
                limit=tuple(t - b for t, b in zip(tile_out, blend)))

  def needed(self, hw, compression: int, decode: bool) -> bool:
    tile = self.geometry(compression, decode)["tile"]
    return hw[0] > tile[0] or hw[1] > tile[1]


def _blend(a, b, extent: int, axis: int):
  """b's first `extent` rows along axis fade in from a's last ones (diffusers blend_v/blend_h)."""
  extent = min(a.shape[axis], b.shape[axis], extent)
  if extent == 0:
    return b
  shape = [1] * b.ndim
  shape[axis] = extent
  w = np.arange(extent, dtype=np.float64) / extent
  wb = jnp.asarray(w.astype(np.float32).reshape(shape), b.dtype)
  wa = jnp.asarray((1 - w).astype(np.float32).reshape(shape), b.dtype)
  n = a.shape[axis]
  a_tail = jnp.take(a, jnp.arange(n - extent, n), axis=axis)
  b_head = jnp.take(b, jnp.arange(extent), axis=axis)
  b_rest = jnp.take(b, jnp.arange(extent, b.shape[axis]), axis=axis)
  return jnp.concatenate([a_tail * wa + b_head * wb, b_rest], axis=axis)


def tiled(run_chunks, net, x, chunk: int, tiling: Tiling, compression: int, decode: bool):
  """run_chunks(net, tile, chunk) over overlapping tiles of x (B, F, H, W, C), blended."""
  g = tiling.geometry(compression, decode)
  (th, tw), (sh, sw) = g["tile"], g["stride"]
  height, width = x.shape[2:4]
  starts_h, starts_w = range(0, height, sh), range(0, width, sw)
  groups: dict = {}
  for i, y0 in enumerate(starts_h):
    for j, x0 in enumerate(starts_w):
      size = (min(th, height - y0), min(tw, width - x0))
      groups.setdefault(size, []).append((i, j, y0, x0))

  def body(mdl, carry, tile):
    return carry, run_chunks(mdl, tile, chunk)

  tiles = {}
  for (h, w), members in groups.items():
    crops = [x[:, :, y0:y0 + h, x0:x0 + w] for _, _, y0, x0 in members]
    if len(crops) == 1:
      outs = run_chunks(net, crops[0], chunk)[None]
    else:
      scan = nn.scan(body, variable_broadcast="params", split_rngs={"params": False},
                     length=len(crops))
      _, outs = scan(net, jnp.zeros((), x.dtype), jnp.stack(crops))
    for k, (i, j, _, _) in enumerate(members):
      tiles[i, j] = outs[k]

  (bh, bw), (rh, rw) = g["blend"], g["limit"]
  rows = []
  for i in range(len(starts_h)):
    row = []
    for j in range(len(starts_w)):
      t = tiles[i, j]
      if i > 0:
        t = _blend(tiles[i - 1, j], t, bh, axis=2)
      if j > 0:
        t = _blend(tiles[i, j - 1], t, bw, axis=3)
      tiles[i, j] = t
      row.append(t[:, :, :rh, :rw])
    rows.append(jnp.concatenate(row, axis=3))
  return jnp.concatenate(rows, axis=2)
