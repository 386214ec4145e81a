"""Teacher depth -> colorized depth video (SemanticREPA's structure target: brighter = closer).

The colormap is "inferno" as used by Video Depth Anything's visualizer: a fixed 256-entry uint8 table
built by linear interpolation of 33 knots (entries 0, 8, ..., 248, 255 of matplotlib's inferno,
rounded to uint8). It deviates from matplotlib's table by at most 1.9/255 per channel, without
depending on matplotlib. Normalization is per clip (min/max over all frames), so brightness is
comparable across the frames of a clip, as in Video Depth Anything's `save_video`.

Teacher depth files: float32 (F, H, W), `.npy`, or `.npz` with key 'depth' (else its only array).
Units are arbitrary; larger = farther (metric or relative depth). A disparity teacher (larger =
closer, e.g. raw Video Depth Anything / Depth Anything output) is read with `disparity=True`.
"""
import numpy as np

_INFERNO_KNOTS = np.array([
    [0, 0, 4], [4, 3, 18], [11, 7, 36], [21, 11, 55], [33, 12, 74], [47, 10, 91], [61, 9, 101],
    [74, 12, 107], [87, 16, 110], [100, 21, 110], [113, 25, 110], [125, 30, 109], [138, 34, 106],
    [151, 39, 102], [163, 44, 97], [176, 49, 91], [188, 55, 84], [199, 62, 76], [210, 70, 68],
    [219, 80, 59], [228, 90, 49], [235, 102, 40], [241, 115, 29], [246, 128, 19], [249, 142, 9],
    [251, 157, 7], [252, 172, 17], [251, 188, 33], [249, 203, 53], [245, 219, 76], [242, 234, 105],
    [243, 246, 138], [252, 255, 164]], np.float64)
_KNOT_POS = np.r_[np.arange(0, 256, 8), 255]

INFERNO = np.round(np.stack([np.interp(np.arange(256), _KNOT_POS, _INFERNO_KNOTS[:, c])
                             for c in range(3)], -1)).astype(np.uint8)   # (256, 3)


class DepthError(ValueError):
  """A teacher depth file that cannot be used; the message names the file."""


def load_depth(path: str) -> np.ndarray:
  """Reads a teacher depth file as float32 (F, H, W)."""
  try:
    if path.endswith(".npz"):
      with np.load(path) as z:
        key = "depth" if "depth" in z.files else (z.files[0] if len(z.files) == 1 else None)
        if key is None:
          raise DepthError(f"{path}: expected a 'depth' array, found keys {z.files}")
        d = z[key]
    else:
      d = np.load(path, allow_pickle=False)
  except (OSError, ValueError) as e:
    if isinstance(e, DepthError):
      raise
    raise DepthError(f"{path}: not a readable depth file ({e})") from e
  if d.ndim == 4 and d.shape[-1] == 1:
    d = d[..., 0]
  if d.ndim != 3 or not np.issubdtype(d.dtype, np.floating):
    raise DepthError(f"{path}: expected float depth of shape (F, H, W), got {d.dtype} {d.shape}")
  if not np.isfinite(d).all():
    raise DepthError(f"{path}: depth contains NaN or inf")
  return d.astype(np.float32)


def closeness(depth: np.ndarray, disparity: bool = False) -> np.ndarray:
  """Per-clip normalized closeness in [0, 1]: 1 = nearest pixel of the clip, 0 = farthest."""
  d = np.asarray(depth, np.float32)
  lo, hi = float(d.min()), float(d.max())
  if hi - lo < 1e-12:
    return np.zeros_like(d)
  x = (d - lo) / (hi - lo)
  return x if disparity else 1.0 - x


def colorize(depth: np.ndarray, disparity: bool = False) -> np.ndarray:
  """(F, H, W) teacher depth -> (F, H, W, 3) uint8 RGB, brighter = closer (inferno)."""
  idx = (closeness(depth, disparity) * 255).astype(np.uint8)   # truncation, as in the reference
  return INFERNO[idx]

