"""FID: our InceptionV3 against pytorch-fid's network (random weights saved as the real .pth,
converted through the CLI) and our Frechet distance against pytorch-fid's scipy.linalg.sqrtm formula."""
import numpy as np
import pytest
import scipy.linalg
import torch

from conversion.mapping import ConversionError
from sem_repa_jax.eval.fid import (FeatureStatistics, TooFewSamples, frechet_distance,
                                   frechet_distance_of)
from sem_repa_jax.models import load_pretrained
from sem_repa_jax.models.metrics.inception import resize_bilinear
from tests.eval.inception_reference import FIDInception
from tests.parity import convert, randomize


def pytorch_fid_distance(mu1, sigma1, mu2, sigma2, eps=1e-6):
  """pytorch-fid's calculate_frechet_distance (scipy.linalg.sqrtm, eps retry, real part)."""
  diff = mu1 - mu2
  covmean, _ = scipy.linalg.sqrtm(sigma1.dot(sigma2), disp=False)
  if not np.isfinite(covmean).all():
    offset = np.eye(sigma1.shape[0]) * eps
    covmean = scipy.linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
  covmean = covmean.real
  return diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)


@pytest.mark.parametrize("n,d", [(200, 16), (40, 64)])   # well and rank-deficiently conditioned
def test_frechet_distance_matches_scipy_sqrtm(n, d):
  rng = np.random.default_rng(n)
  f1 = rng.standard_normal((n, d)) @ rng.standard_normal((d, d))
  f2 = 0.5 + rng.standard_normal((n + 7, d)) @ rng.standard_normal((d, d))
  mu1, s1 = f1.mean(0), np.cov(f1, rowvar=False)
  mu2, s2 = f2.mean(0), np.cov(f2, rowvar=False)
  ref = pytorch_fid_distance(mu1, s1, mu2, s2)
  assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-6)
  assert frechet_distance_of(f1, f2) == pytest.approx(ref, rel=1e-6)
  assert frechet_distance_of(f1, f1) == pytest.approx(0.0, abs=1e-6 * np.trace(s1))


def test_streamed_statistics_equal_np_cov():
  rng = np.random.default_rng(0)
  f = rng.standard_normal((50, 8)) * 3 + 1
  s = FeatureStatistics(8)
  for chunk in np.array_split(f, 7):
    s.add(chunk)
  mu, sigma = s.mean_cov()
  np.testing.assert_allclose(mu, f.mean(0), rtol=1e-12)
  np.testing.assert_allclose(sigma, np.cov(f, rowvar=False), rtol=1e-10, atol=1e-12)


def test_one_sample_is_too_few():
  with pytest.raises(TooFewSamples, match="generated: 1 feature vector.*at least 2"):
    s = FeatureStatistics(4)
    s.add(np.ones((1, 4)))
    s.mean_cov("generated")


def test_resize_matches_torch_interpolate():
  x = np.random.default_rng(0).standard_normal((2, 13, 21, 3)).astype(np.float32)
  for size in ((29, 40), (7, 9)):   # up and down
    ref = torch.nn.functional.interpolate(torch.from_numpy(x).permute(0, 3, 1, 2), size=size,
                                          mode="bilinear", align_corners=False)
    np.testing.assert_allclose(np.asarray(resize_bilinear(x, *size)),
                               ref.permute(0, 2, 3, 1).numpy(), rtol=0, atol=1e-5)   # float32 rounding


def _reference(seed=0):
  return randomize(FIDInception(input_size=75).eval(), seed=seed, spread=0.1)


def test_inception_matches_pytorch_fid_network(tmp_path):
  ref = _reference()
  torch.save(ref.state_dict(), tmp_path / "pt_inception-2015-12-05-6726825d.pth")
  dst = convert("fid-inception", tmp_path / "pt_inception-2015-12-05-6726825d.pth", tmp_path / "out")
  module, variables = load_pretrained(dst, input_size=75)
  x = np.random.default_rng(1).uniform(0, 1, (2, 64, 80, 3)).astype(np.float32)
  with torch.no_grad():
    expected = ref(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
  ours = np.asarray(module.apply(variables, 2 * x - 1))   # our input convention is [-1, 1]
  assert ours.shape == (2, 2048)
  np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_imagenet_inception_is_refused(tmp_path):
  sd = _reference().state_dict()
  sd["fc.weight"] = torch.zeros(1000, 2048)
  sd["fc.bias"] = torch.zeros(1000)
  torch.save(sd, tmp_path / "inception_v3_google.pth")
  from conversion.fid_inception import convert as fid_convert
  with pytest.raises(ConversionError, match="not pytorch-fid's FID Inception"):
    fid_convert(str(tmp_path / "inception_v3_google.pth"), str(tmp_path / "out"))
