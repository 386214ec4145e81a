"""PSNR, SSIM and depth errors against independent float64 numpy implementations of the formulas."""
import numpy as np
import pytest
from scipy import ndimage

from sem_repa_jax.eval import metrics


def _ssim_reference(x, y, data_range):
  """Wang et al. 2004 in float64, written the way skimage does it: full-size Gaussian filtering
  (scipy, sigma 1.5, truncate 3.5 -> 11 taps, reflect) and a crop of the 5-pixel border, so only
  windows that lie inside the image count; per channel, then the channels averaged."""
  x = x.astype(np.float64)
  y = y.astype(np.float64)
  c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
  per_channel = []
  for c in range(x.shape[-1]):
    a, b = x[..., c], y[..., c]
    f = lambda v: ndimage.gaussian_filter(v, sigma=1.5, truncate=3.5, mode="reflect")
    ma, mb = f(a), f(b)
    va, vb, cab = f(a * a) - ma * ma, f(b * b) - mb * mb, f(a * b) - ma * mb
    s = ((2 * ma * mb + c1) * (2 * cab + c2)) / ((ma ** 2 + mb ** 2 + c1) * (va + vb + c2))
    per_channel.append(s[5:-5, 5:-5].mean())
  return float(np.mean(per_channel))


def _pair(shape, seed, noise):
  rng = np.random.default_rng(seed)
  base = ndimage.uniform_filter(rng.uniform(-1, 1, shape), size=(1,) * (len(shape) - 3) + (5, 5, 1))
  base = np.clip(base * 2.5, -1, 1)
  other = np.clip(base + noise * rng.normal(size=shape), -1, 1)
  return base.astype(np.float32), other.astype(np.float32)


def test_ssim_matches_reference_on_float_frames():
  x, y = _pair((3, 24, 20, 3), seed=0, noise=0.2)   # three frames
  got = np.asarray(metrics.ssim(x, y, data_range=2.0))
  assert got.shape == (3,)
  want = [_ssim_reference(x[i], y[i], 2.0) for i in range(3)]
  np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)
  assert 0.2 < min(want) < max(want) < 0.99


def test_ssim_matches_reference_on_uint8_and_is_one_for_equal_images():
  x, y = _pair((2, 2, 16, 16, 3), seed=1, noise=0.1)   # (clips, frames, H, W, C)
  xu = np.round((x + 1) * 127.5).astype(np.uint8)
  yu = np.round((y + 1) * 127.5).astype(np.uint8)
  got = np.asarray(metrics.ssim(xu, yu, data_range=255.0))
  assert got.shape == (2, 2)
  want = [[_ssim_reference(xu[i, j], yu[i, j], 255.0) for j in range(2)] for i in range(2)]
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
  np.testing.assert_allclose(np.asarray(metrics.ssim(xu, xu, data_range=255.0)), 1.0, atol=1e-6)


def test_ssim_window_is_the_normalized_gaussian():
  w = metrics.gaussian_window()
  assert w.shape == (11,) and abs(w.sum() - 1) < 1e-15
  np.testing.assert_allclose(w[5] / w[4], np.exp(0.5 / 1.5 ** 2), rtol=1e-14)


def test_psnr_matches_formula_and_data_range():
  x, y = _pair((4, 8, 8, 3), seed=2, noise=0.05)
  mse = ((x.astype(np.float64) - y) ** 2).mean(axis=(1, 2, 3))
  np.testing.assert_allclose(np.asarray(metrics.psnr(x, y, data_range=2.0)),
                             10 * np.log10(4.0 / mse), rtol=1e-5)
  xu = np.array([[[[10]]], [[[200]]]], np.uint8)
  yu = np.array([[[[13]]], [[[200]]]], np.uint8)   # uint8 difference must not wrap around
  got = np.asarray(metrics.psnr(xu, yu, data_range=255.0))
  np.testing.assert_allclose(got[0], 10 * np.log10(255.0 ** 2 / 9.0), rtol=1e-6)
  assert np.isinf(got[1])


def test_metric_input_errors():
  a = np.zeros((2, 12, 12, 3), np.float32)
  with pytest.raises(ValueError, match=r"same shape; got \(2, 12, 12, 3\) and \(1, 12, 12, 3\)"):
    metrics.psnr(a, a[:1], data_range=2.0)
  with pytest.raises(ValueError, match="data_range must be a positive number"):
    metrics.ssim(a, a, data_range=0.0)
  with pytest.raises(ValueError, match=r"images of shape \(2, 12, 8, 3\) are smaller than the 11x11"):
    metrics.ssim(a[:, :, :8], a[:, :, :8], data_range=2.0)


def _depth_reference(pred, target, mask, align):
  v = mask & np.isfinite(pred) & np.isfinite(target) & (target > 0)
  p, t = pred[v].astype(np.float64), target[v].astype(np.float64)
  if align == "scale":
    s, b = (p @ t) / (p @ p), 0.0
  elif align == "scale_shift":
    s, b = np.linalg.lstsq(np.stack([p, np.ones_like(p)], 1), t, rcond=None)[0]
  else:
    s, b = 1.0, 0.0
  a = s * p + b
  return dict(abs_rel=np.mean(np.abs(a - t) / t), rmse=np.sqrt(np.mean((a - t) ** 2)),
              delta1=np.mean(np.maximum(a / t, t / a) < 1.25), scale=s, shift=b)


@pytest.mark.parametrize("align", metrics.DEPTH_ALIGNMENTS)
def test_depth_errors_match_least_squares_reference(align):
  rng = np.random.default_rng(3)
  target = rng.uniform(0.5, 4.0, (3, 10, 12)).astype(np.float32)
  pred = (0.4 * target + 0.3 + 0.15 * rng.normal(size=target.shape)).astype(np.float32)
  mask = rng.uniform(size=target.shape) > 0.3
  target[0, 0, :3] = [0.0, np.nan, -1.0]           # excluded even where the mask is true
  mask[0, 0, :3] = True
  got = metrics.depth_errors(pred, target, mask, align=align)
  for key in ("abs_rel", "rmse", "delta1", "scale", "shift"):
    assert got[key].shape == (3,)
    want = [_depth_reference(pred[i], target[i], mask[i], align)[key] for i in range(3)]
    np.testing.assert_allclose(np.asarray(got[key]), want, rtol=2e-5, atol=1e-6, err_msg=key)


def test_depth_alignment_recovers_an_affine_teacher_exactly():
  rng = np.random.default_rng(4)
  target = rng.uniform(1.0, 3.0, (2, 8, 8)).astype(np.float32)
  pred = (target - 0.5) / 2.0
  got = metrics.depth_errors(pred, target, align="scale_shift")
  np.testing.assert_allclose(np.asarray(got["rmse"]), 0.0, atol=1e-5)
  np.testing.assert_allclose(np.asarray(got["scale"]), 2.0, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(got["shift"]), 0.5, atol=1e-5)
  with pytest.raises(ValueError, match="align must be one of"):
    metrics.depth_errors(pred, target, align="median")
  with pytest.raises(ValueError, match=r"mask of shape \(8, 8\) does not match depth of shape \(2, 8, 8\)"):
    metrics.depth_errors(pred, target, np.ones((8, 8), bool))


def test_l1_is_mean_absolute_error_in_units_of_the_range():
  rng = np.random.default_rng(5)
  x = rng.integers(0, 256, (2, 3, 8, 9, 3)).astype(np.uint8)
  y = rng.integers(0, 256, (2, 3, 8, 9, 3)).astype(np.uint8)
  expected = np.abs(x.astype(np.float64) - y).mean(axis=(-3, -2, -1)) / 255.0   # no uint8 wrap
  np.testing.assert_allclose(np.asarray(metrics.l1(x, y, data_range=255.0)), expected, rtol=1e-6)
