"""CPBD: our vectorized numpy CPBD against the `cpbd` package (1.0.7) itself on fixed images (sharp,
blurred, noisy, flat), and the frames' luma against PIL's convert('L')."""
import numpy as np
import pytest
import scipy.ndimage as ndi
from PIL import Image

from sem_repa_jax.eval.cpbd import canny, cpbd, cpbd_frames, luma


@pytest.fixture(scope="module")
def package():
  # cpbd 1.0.7 imports scipy.ndimage.imread for its command line; SciPy removed it in 1.2.
  mp = pytest.MonkeyPatch()
  mp.setattr(ndi, "imread", None, raising=False)
  from cpbd import compute
  yield compute
  mp.undo()


def _images():
  """Fixed grey images 0..255: shapes on a gradient (sharp), its blurs, a noisy one, a flat one."""
  rng = np.random.default_rng(0)
  yy, xx = np.mgrid[0:128, 0:192]
  img = 40 + 0.5 * xx + 0.3 * yy
  img[20:70, 30:90] = 200
  img[((yy - 90) ** 2 + (xx - 140) ** 2) < 25 ** 2] = 20
  img[80:120, 10:60] = 120 + 60 * ((xx[80:120, 10:60] // 6) % 2)
  sharp = np.clip(img, 0, 255).round()
  out = {"sharp": sharp, "noisy": np.clip(sharp + rng.normal(0, 12, sharp.shape), 0, 255).round()}
  for sigma in (1.0, 2.5):
    out[f"blur{sigma}"] = ndi.gaussian_filter(sharp, sigma).round()
  out["flat"] = np.full((64, 64), 77.0)
  return {k: v.astype(np.uint8) for k, v in out.items()}


@pytest.mark.parametrize("name", list(_images()))
def test_cpbd_equals_the_package(package, name):
  image = _images()[name]
  from skimage.feature import canny as skimage_canny
  np.testing.assert_array_equal(canny(image.astype(np.float64)), skimage_canny(image.astype(np.float64)))
  assert cpbd(image) == pytest.approx(package(image), abs=1e-12)


def test_blur_lowers_cpbd_and_frames_use_pil_luma():
  images = _images()
  assert cpbd(images["sharp"]) > cpbd(images["blur1.0"]) > cpbd(images["blur2.5"])
  rgb = np.random.default_rng(1).integers(0, 256, (2, 64, 80, 3), dtype=np.uint8)
  expected = np.stack([np.asarray(Image.fromarray(f).convert("L")) for f in rgb])
  np.testing.assert_array_equal(luma(rgb), expected)
  np.testing.assert_allclose(cpbd_frames(rgb), [cpbd(g) for g in expected])
  with pytest.raises(ValueError, match=r"at least 64x64; got shape \(32, 64\)"):
    cpbd(np.zeros((32, 64)))
