"""Depth -> RGB, the one colorization used for annotation (SAM targets) and for reports.

SemanticREPA encodes the teacher's depth as an RGB video with the VAE, "brighter = closer". The
colormap is inferno: its luminance rises monotonically from black to pale yellow, so brightness
alone orders depth. The 256-entry table is built from Matt Zucker's degree-6 polynomial fit of
matplotlib's inferno (CC0, shadertoy WlfXRN), clipped to [0, 1] and rounded to uint8. It needs no
matplotlib and differs from matplotlib's table by at most ~5/255 per channel at the entries checked
(0, 1, 128, 254, 255); its luminance still rises strictly from entry to entry.

Normalization is per clip (one min/max over all frames and valid pixels), so a clip's colours mean
the same depth in every frame. Invalid pixels (mask false, or non-finite depth) are black.
"""
from typing import Optional

import numpy as np

from sem_repa_jax.eval.video_io import to_uint8

# Coefficients c0..c6 (rows) for r, g, b (columns) of inferno(t) = sum_k c_k t^k.
_INFERNO_POLY = np.array([
    [0.0002189403691192265, 0.001651004631001012, -0.01948089843709184],
    [0.1065134194856116, 0.5639564367884091, 3.932712388889277],
    [11.60249308247187, -3.972853965665698, -15.9423941062914],
    [-41.70399613139459, 17.43639888205313, 44.35414519872813],
    [77.162935699427, -33.40235894210092, -81.80730925738993],
    [-71.31942824499214, 32.62606426397723, 73.20951985803202],
    [25.13112622477341, -12.24266895238567, -23.07032500287172],
])


def _inferno_table() -> np.ndarray:
  t = np.linspace(0.0, 1.0, 256)
  rgb = np.zeros((256, 3))
  for c in _INFERNO_POLY[::-1]:   # Horner
    rgb = rgb * t[:, None] + c
  return np.round(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)


INFERNO = _inferno_table()   # (256, 3) uint8; index 0 = far/dark, 255 = near/bright
INFERNO.setflags(write=False)

DEPTH_KINDS = ("depth", "disparity")


def normalize_depth(depth, valid_mask=None, near_is_bright=True, kind="depth"):
  """Per-clip min/max normalization to [0, 1] with 1 = brightest. Returns (t float64, valid bool).

  kind: 'depth' (larger = farther, metric or synthetic depth) or 'disparity' (larger = closer, as
  the relative inverse depth of Depth Anything / MiDaS). A clip of constant depth maps to 0.5.
  """
  depth = np.asarray(depth, dtype=np.float64)
  if depth.ndim != 3:
    raise ValueError(f"colorize_depth: expected depth (F, H, W); got shape {depth.shape}")
  if kind not in DEPTH_KINDS:
    raise ValueError(f"colorize_depth: kind must be one of {DEPTH_KINDS}; got {kind!r}")
  valid = np.isfinite(depth)
  if valid_mask is not None:
    valid_mask = np.asarray(valid_mask)
    if valid_mask.shape != depth.shape:
      raise ValueError(f"colorize_depth: valid_mask of shape {valid_mask.shape} does not match depth "
                       f"of shape {depth.shape}")
    valid &= valid_mask.astype(bool)
  if not valid.any():
    return np.zeros(depth.shape), valid
  lo, hi = depth[valid].min(), depth[valid].max()
  t = np.full(depth.shape, 0.5) if hi == lo else (np.where(valid, depth, lo) - lo) / (hi - lo)
  closer_is_larger = kind == "disparity"
  if closer_is_larger != near_is_bright:
    t = 1.0 - t
  return np.where(valid, t, 0.0), valid


def colorize_depth(depth, valid_mask: Optional[np.ndarray] = None, near_is_bright: bool = True,
                   *, kind: str = "depth") -> np.ndarray:
  """depth (F, H, W) -> uint8 (F, H, W, 3) inferno colours; see `normalize_depth` for the arguments."""
  t, valid = normalize_depth(depth, valid_mask, near_is_bright, kind)
  rgb = INFERNO[np.round(t * 255.0).astype(np.int64)]
  rgb[~valid] = 0
  return rgb


def colorize_depth_float(depth, valid_mask: Optional[np.ndarray] = None, near_is_bright: bool = True,
                         *, kind: str = "depth") -> np.ndarray:
  """As `colorize_depth`, as float32 in [-1, 1]: the pixel convention of the VAE input (d0 targets)."""
  rgb = colorize_depth(depth, valid_mask, near_is_bright, kind=kind)
  return rgb.astype(np.float32) / 127.5 - 1.0


def depth_latent_to_visual(vae, variables, depth_latents, *, scaling_factor: float) -> np.ndarray:
  """Decode depth latents (e.g. the Structure Alignment Module's d0) to a viewable uint8 video.

  The latents encode an already colorized depth video, so decoding them is the visualization: no
  inverse colormap is needed. vae: the CogVideoX VAE or the demo's LatentCodec (same interface).
  depth_latents: (B, F, h, w, C) scaled latents, divided by scaling_factor before decoding (pass
  1.0 for unscaled latents). Returns uint8 (B, F', H, W, 3).
  """
  if not scaling_factor:
    raise ValueError(f"depth_latent_to_visual: scaling_factor must be non-zero; got {scaling_factor!r}")
  return to_uint8(vae.apply(variables, depth_latents / scaling_factor, method="decode"))


def nearness(depth_video_u8) -> np.ndarray:
  """The inverse of `colorize_depth`: colorized depth (..., 3) uint8 -> normalized nearness in
  [0, 1] by the nearest inferno entry (exact for a teacher's colorization, nearest for a model's)."""
  x = np.asarray(depth_video_u8).reshape(-1, 3).astype(np.float32)
  table = INFERNO.astype(np.float32)
  idx = np.empty(len(x), np.int64)
  for s in range(0, len(x), 65536):   # chunks bound the (pixels, 256) distance table
    chunk = x[s:s + 65536]
    idx[s:s + 65536] = np.argmin(((chunk[:, None] - table[None]) ** 2).sum(-1), axis=1)
  return (idx / 255.0).reshape(np.shape(depth_video_u8)[:-1])
