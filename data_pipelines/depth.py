"""Teacher depth files: reading and checking them.

Teacher depth files: float32 (F, H, W), `.npy`, or `.npz` with key 'depth' (else its only array).
Units are arbitrary; larger = farther (metric or relative depth). A disparity teacher (larger =
closer, e.g. raw Video Depth Anything / Depth Anything output) is read with `disparity=True`.
Colorization (brighter = closer, inferno) is sem_repa_jax.eval.colorize.colorize_depth.
"""
import numpy as np


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
