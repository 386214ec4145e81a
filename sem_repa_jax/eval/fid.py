"""Frechet distances between feature sets: FID (Heusel et al. 2017) and the video variants.

FID here is what pytorch-fid computes: pool3 features of FID's InceptionV3
(models/metrics/inception.py) for every frame of every video of each set, a Gaussian fit per set
(mean, covariance with the N - 1 normalization of np.cov) and

  d^2 = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)).

The trace of the matrix square root is computed from eigenvalues: (S1 S2)^(1/2) has the same
eigenvalues as the symmetric PSD product S1^(1/2) S2 S1^(1/2), so tr = sum sqrt(eigvalsh(...)),
in float64 on the host. This needs no complex arithmetic and no eps retry for singular
covariances (fewer samples than dimensions); tests check it against pytorch-fid's formula with
scipy.linalg.sqrtm. Statistics accumulate batch by batch (`FeatureStatistics`), so a set of any
size is one pass with bounded memory.
"""
import dataclasses

import numpy as np


class TooFewSamples(ValueError):
  """A covariance needs at least two feature vectors."""


@dataclasses.dataclass
class FeatureStatistics:
  """Running sums of features in float64: `add` batches (N, D), then `mean_cov`."""
  dim: int
  count: int = 0
  total: np.ndarray = None
  outer: np.ndarray = None

  def __post_init__(self):
    self.total = np.zeros(self.dim) if self.total is None else self.total
    self.outer = np.zeros((self.dim, self.dim)) if self.outer is None else self.outer

  def add(self, features) -> None:
    f = np.asarray(features, np.float64).reshape(-1, self.dim)
    self.count += len(f)
    self.total += f.sum(0)
    self.outer += f.T @ f

  def mean_cov(self, name: str = "features"):
    """(mu (D,), sigma (D, D)), sigma as np.cov(rowvar=False) gives it."""
    if self.count < 2:
      raise TooFewSamples(f"{name}: {self.count} feature vector(s); a covariance needs at least 2 "
                          "(give more videos or frames)")
    mu = self.total / self.count
    sigma = (self.outer - self.count * np.outer(mu, mu)) / (self.count - 1)
    return mu, (sigma + sigma.T) / 2


def trace_sqrt_product(sigma1, sigma2) -> float:
  """tr((S1 S2)^(1/2)) of two symmetric PSD matrices, from eigenvalues (see the module docstring)."""
  w, v = np.linalg.eigh(np.asarray(sigma1, np.float64))
  root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
  m = root1 @ np.asarray(sigma2, np.float64) @ root1
  return float(np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None))))


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
  """Squared Frechet distance between N(mu1, sigma1) and N(mu2, sigma2)."""
  mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
  if mu1.shape != mu2.shape or np.shape(sigma1) != np.shape(sigma2) or \
      np.shape(sigma1) != mu1.shape * 2:
    raise ValueError(f"frechet_distance: means {mu1.shape}, {mu2.shape} and covariances "
                     f"{np.shape(sigma1)}, {np.shape(sigma2)} must be (D,) and (D, D)")
  diff = mu1 - mu2
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2)
               - 2.0 * trace_sqrt_product(sigma1, sigma2))


def frechet_distance_of(features1, features2) -> float:
  """The Frechet distance of two feature sets (N1, D), (N2, D)."""
  stats = []
  for name, f in (("first set", features1), ("second set", features2)):
    f = np.asarray(f)
    s = FeatureStatistics(f.shape[-1])
    s.add(f)
    stats.append(s.mean_cov(name))
  return frechet_distance(*stats[0], *stats[1])
