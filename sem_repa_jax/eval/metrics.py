"""Frame metrics for the papers' evaluations: PSNR, SSIM, L1, and depth error against a teacher.

All functions are jitted JAX, batched over any leading axes (frames, clips): images are
(..., H, W, C) and depth maps (..., H, W); each returns one value per image, in float32. Average
over frames and clips as the evaluation protocol asks. `data_range` is explicit everywhere because
the same code sees [-1, 1] video (range 2.0) and uint8 frames (range 255.0).

SSIM follows Wang et al. 2004 as used by the papers (and by skimage's structural_similarity with
gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=L): an 11-tap Gaussian
window with sigma 1.5 (normalized to sum 1), K1 = 0.01, K2 = 0.03, statistics over 'valid' window
positions only (no padding), the SSIM map averaged per channel, then the channels averaged.

L1 is the mean absolute difference divided by data_range, i.e. on pixels scaled to [0, 1] whatever
their stored range (see docs/evaluation.md on the papers' L1 columns).

Colour handling: all three compare the RGB channels as given (no conversion to luma Y); SSIM is
computed per channel and averaged. The evaluate job passes uint8 frames as float with
data_range=255.

FVD, FID, LPIPS and ID similarity need pretrained networks (I3D, Inception, VGG, ArcFace) and are
not here: models/metrics/lpips.py, eval/fid.py, eval/fvd.py, eval/identity.py.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
DEPTH_ALIGNMENTS = ("none", "scale", "scale_shift")


def _check_pair(name, x, y, min_ndim):
  if x.shape != y.shape:
    raise ValueError(f"{name}: the two inputs must have the same shape; got {x.shape} and {y.shape}")
  if x.ndim < min_ndim:
    raise ValueError(f"{name}: expected at least {min_ndim} dims ((..., H, W{', C' if min_ndim == 3 else ''})); "
                     f"got shape {x.shape}")


def _check_range(data_range):
  if not isinstance(data_range, (int, float)) or not data_range > 0:
    raise ValueError(f"data_range must be a positive number (2.0 for [-1, 1], 255.0 for uint8); got {data_range!r}")


@functools.partial(jax.jit, static_argnames=("data_range",))
def psnr(x, y, *, data_range: float):
  """Peak signal-to-noise ratio in dB of each image (..., H, W, C) -> (...); inf where x == y."""
  _check_pair("psnr", x, y, 3)
  _check_range(data_range)
  mse = jnp.mean(jnp.square(x.astype(jnp.float32) - y.astype(jnp.float32)), axis=(-3, -2, -1))
  return 10.0 * jnp.log10(jnp.float32(data_range) ** 2 / mse)


@functools.partial(jax.jit, static_argnames=("data_range",))
def l1(x, y, *, data_range: float):
  """Mean absolute error of each image (..., H, W, C) -> (...), in units of data_range."""
  _check_pair("l1", x, y, 3)
  _check_range(data_range)
  diff = jnp.abs(x.astype(jnp.float32) - y.astype(jnp.float32))
  return jnp.mean(diff, axis=(-3, -2, -1)) / jnp.float32(data_range)


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
  """The 1-D SSIM window (float64, sums to 1); the 2-D window is its outer product."""
  r = np.arange(size, dtype=np.float64) - (size - 1) / 2
  w = np.exp(-0.5 * (r / sigma) ** 2)
  return w / w.sum()


def _filter_valid(x, w):
  """Separable correlation with window w over axes -3 (H) and -2 (W), 'valid' positions only."""
  n = len(w)
  h = x.shape[-3] - n + 1
  x = sum(float(w[i]) * x[..., i:i + h, :, :] for i in range(n))
  wd = x.shape[-2] - n + 1
  return sum(float(w[i]) * x[..., :, i:i + wd, :] for i in range(n))


@functools.partial(jax.jit, static_argnames=("data_range",))
def ssim(x, y, *, data_range: float):
  """Mean structural similarity of each image (..., H, W, C) -> (...); see the module docstring."""
  _check_pair("ssim", x, y, 3)
  _check_range(data_range)
  if x.shape[-3] < SSIM_WINDOW or x.shape[-2] < SSIM_WINDOW:
    raise ValueError(f"ssim: images of shape {x.shape} are smaller than the {SSIM_WINDOW}x{SSIM_WINDOW} window")
  x = x.astype(jnp.float32)
  y = y.astype(jnp.float32)
  w = gaussian_window()
  c1 = (SSIM_K1 * data_range) ** 2
  c2 = (SSIM_K2 * data_range) ** 2
  mu_x, mu_y = _filter_valid(x, w), _filter_valid(y, w)
  var_x = _filter_valid(x * x, w) - mu_x * mu_x
  var_y = _filter_valid(y * y, w) - mu_y * mu_y
  cov = _filter_valid(x * y, w) - mu_x * mu_y
  ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
  return jnp.mean(jnp.mean(ssim_map, axis=(-3, -2)), axis=-1)


def align_depth(pred, target, weights, mode: str):
  """Least-squares scale (and shift) of pred onto target per map (..., H, W), under 0/1 weights.

  Teacher depth (e.g. Depth Anything) is relative: defined up to scale and shift, so predictions are
  compared after the affine map that fits them best. Returns (scale, shift), each (...).
  """
  axes = (-2, -1)
  n = jnp.sum(weights, axis=axes)
  safe_n = jnp.maximum(n, 1.0)
  if mode == "none":
    return jnp.ones_like(n), jnp.zeros_like(n)
  if mode == "scale":
    ppt = jnp.sum(weights * pred * target, axis=axes)
    pp = jnp.sum(weights * pred * pred, axis=axes)
    return jnp.where(pp > 0, ppt / jnp.where(pp > 0, pp, 1.0), 0.0), jnp.zeros_like(n)
  # Centred normal equations: better conditioned than solving the 2x2 system directly.
  mp = jnp.sum(weights * pred, axis=axes) / safe_n
  mt = jnp.sum(weights * target, axis=axes) / safe_n
  pc = pred - mp[..., None, None]
  tc = target - mt[..., None, None]
  spp = jnp.sum(weights * pc * pc, axis=axes)
  spt = jnp.sum(weights * pc * tc, axis=axes)
  scale = jnp.where(spp > 0, spt / jnp.where(spp > 0, spp, 1.0), 0.0)
  return scale, mt - scale * mp


@functools.partial(jax.jit, static_argnames=("align",))
def depth_errors(pred, target, mask=None, *, align: str = "none"):
  """Depth error of each map (..., H, W) -> dict of (...) arrays.

  Pixels count where mask (optional, same shape) is true, both maps are finite, and target > 0.
  align: 'none', 'scale' or 'scale_shift' (least squares per map, see `align_depth`). For one fit
  per clip instead of per frame, reshape (F, H, W) to (1, F*H, W) first.
  Returns abs_rel = mean |a - t| / t, rmse = sqrt(mean (a - t)^2), delta1 = fraction with
  max(a/t, t/a) < 1.25 (a: the aligned prediction), plus the fitted scale and shift. A map with no
  valid pixel gives nan.
  """
  if align not in DEPTH_ALIGNMENTS:
    raise ValueError(f"depth_errors: align must be one of {DEPTH_ALIGNMENTS}; got {align!r}")
  _check_pair("depth_errors", pred, target, 2)
  if mask is not None and mask.shape != pred.shape:
    raise ValueError(f"depth_errors: mask of shape {mask.shape} does not match depth of shape {pred.shape}")
  pred = pred.astype(jnp.float32)
  target = target.astype(jnp.float32)
  valid = jnp.isfinite(pred) & jnp.isfinite(target) & (target > 0)
  if mask is not None:
    valid = valid & mask.astype(bool)
  weights = valid.astype(jnp.float32)
  pred = jnp.where(valid, pred, 0.0)
  target = jnp.where(valid, target, 1.0)
  scale, shift = align_depth(pred, target, weights, align)
  aligned = scale[..., None, None] * pred + shift[..., None, None]
  n = jnp.sum(weights, axis=(-2, -1))
  mean = lambda v: jnp.sum(weights * v, axis=(-2, -1)) / n
  ratio = jnp.maximum(aligned / target, target / jnp.where(aligned > 0, aligned, 1e-30))
  return dict(abs_rel=mean(jnp.abs(aligned - target) / target),
              rmse=jnp.sqrt(mean(jnp.square(aligned - target))),
              delta1=mean((ratio < 1.25).astype(jnp.float32)),
              scale=scale, shift=shift)

