"""2-D similarity transforms of keypoint sets and the Procrustes fit by SVD (StableAnimator++ Sec.
III-A, eqs. 2-8).

A `Similarity` maps points p (..., K, 2) to  scale * R p + translation  (R a proper rotation).
`procrustes(source, target, weights)` is the weighted least-squares similarity taking source onto
target (Umeyama's solution, the paper's steps):
  centroids   mu_s, mu_t = weighted means;  X = source - mu_s, Y = target - mu_t
  covariance  C = sum_i w_i X_i Y_i^T  (2 x 2);  C = U S V^T
  rotation    R = V diag(1, d) U^T,  d = sign(det(V U^T))   (the reflection fix: R stays proper)
  scale       s = tr(diag(1, d) S) / sum_i w_i |X_i|^2
  translation t = mu_t - s R mu_s
Weights are the keypoints present in both sets (0 for a missing one), so missing points leave the
fit. With fewer than two present points, or a source of no spread, the fit falls back to the
identity rotation and scale with the centroids' translation (or the identity when none is present).
Coordinates must be isotropic (x and y in the same unit: pixels, or pixels over one side), or a
rotation would shear the figure.
"""
from typing import NamedTuple

import jax.numpy as jnp

MIN_SPREAD = 1e-8    # sum of squared centered source coordinates below this: no scale to fit


class Similarity(NamedTuple):
  """scale (...,), rotation (..., 2, 2), translation (..., 2): p -> scale * R p + translation."""
  scale: jnp.ndarray
  rotation: jnp.ndarray
  translation: jnp.ndarray


def rotation_matrix(angle):
  """(...,) radians -> (..., 2, 2) counter-clockwise rotation in (x, y)."""
  c, s = jnp.cos(angle), jnp.sin(angle)
  return jnp.stack([jnp.stack([c, -s], -1), jnp.stack([s, c], -1)], -2)


def apply(sim: Similarity, points):
  """points (..., K, 2) moved by the similarity (one per leading index)."""
  rotated = jnp.einsum("...ij,...kj->...ki", sim.rotation, points)
  return sim.scale[..., None, None] * rotated + sim.translation[..., None, :]


def compose(outer: Similarity, inner: Similarity) -> Similarity:
  """The similarity of `apply(outer, apply(inner, p))`."""
  rotation = outer.rotation @ inner.rotation
  translation = outer.scale[..., None] * jnp.einsum("...ij,...j->...i", outer.rotation,
                                                    inner.translation) + outer.translation
  return Similarity(outer.scale * inner.scale, rotation, translation)


def about(scale, angle, shift, center) -> Similarity:
  """The similarity that rotates by `angle` and scales by `scale` about `center` (..., 2), then
  shifts by `shift` (..., 2): p -> scale * R (p - center) + center + shift."""
  rotation = rotation_matrix(angle)
  translation = center + shift - scale[..., None] * jnp.einsum("...ij,...j->...i", rotation,
                                                               center)
  return Similarity(scale, rotation, translation)


def weighted_centroid(points, weights):
  """(..., K, 2), (..., K) -> (..., 2); zero where no weight."""
  total = weights.sum(-1, keepdims=True)
  return (weights[..., None] * points).sum(-2) / jnp.maximum(total, 1e-12)


def procrustes(source, target, weights) -> Similarity:
  """The weighted least-squares similarity taking `source` (..., K, 2) onto `target` (..., K, 2);
  weights (..., K) >= 0 (the module docstring)."""
  source, target = jnp.asarray(source, jnp.float32), jnp.asarray(target, jnp.float32)
  w = jnp.asarray(weights, jnp.float32)
  mu_s, mu_t = weighted_centroid(source, w), weighted_centroid(target, w)
  x, y = source - mu_s[..., None, :], target - mu_t[..., None, :]
  cov = jnp.einsum("...k,...ki,...kj->...ij", w, x, y)
  u, s, vt = jnp.linalg.svd(cov)
  v = jnp.swapaxes(vt, -1, -2)
  d = jnp.sign(jnp.linalg.det(v @ jnp.swapaxes(u, -1, -2)))
  d = jnp.where(d == 0, 1.0, d)
  fix = jnp.stack([jnp.ones_like(d), d], -1)                       # diag(1, d)
  rotation = (v * fix[..., None, :]) @ jnp.swapaxes(u, -1, -2)
  spread = jnp.einsum("...k,...ki,...ki->...", w, x, x)
  ok = (spread > MIN_SPREAD) & ((w > 0).sum(-1) >= 2)
  scale = jnp.where(ok, (s * fix).sum(-1) / jnp.where(ok, spread, 1.0), 1.0)
  rotation = jnp.where(ok[..., None, None], rotation, jnp.eye(2, dtype=rotation.dtype))
  translation = mu_t - scale[..., None] * jnp.einsum("...ij,...j->...i", rotation, mu_s)
  return Similarity(scale, rotation, translation)


def rotation_angle(rotation):
  """(..., 2, 2) proper rotation -> (...,) radians in (-pi, pi]."""
  return jnp.arctan2(rotation[..., 1, 0], rotation[..., 0, 0])
