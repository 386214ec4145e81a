"""The alignments the learned one is measured against, as batched pure functions of keypoints.

- `least_squares`: the official StableAnimator / MimicMotion fit (data_pipelines/poses/align.py
  does it on a clip with numpy): over the reference's ALIGNMENT_POINTS, y by a degree-1 least
  squares of reference y on driving y, the same scale for x, x offset the mean residual. No
  rotation. A fit with no spread in driving y (or fewer than two pairs) keeps scale 1.
- `svd_only`: StableAnimator++'s "w/o Prediction" ablation, the Procrustes fit of the driving
  points onto the reference's (similarity.procrustes) applied as it is.
Both take reference (..., 18, 2) with scores (..., 18) and driving (..., 18, 2) with scores, one
fit per leading index, in isotropic coordinates, and return a Similarity.
"""
import jax.numpy as jnp

from sem_repa_jax.methods.pose_alignment import similarity

# OpenPose indices of the points the official fit uses (no elbows or wrists: they move most).
ALIGNMENT_POINTS = (0, 1, 2, 5, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17)


def _present_pairs(reference_scores, driving_scores, points=None):
  w = (reference_scores > 0) & (driving_scores > 0)
  if points is not None:
    w = w & jnp.isin(jnp.arange(w.shape[-1]), jnp.asarray(points))
  return w.astype(jnp.float32)


def least_squares(reference, reference_scores, driving, driving_scores) -> similarity.Similarity:
  w = _present_pairs(reference_scores, driving_scores, ALIGNMENT_POINTS)
  n = jnp.maximum(w.sum(-1), 1e-12)
  mean = lambda a: (w * a).sum(-1) / n                               # noqa: E731
  dx, dy, rx, ry = driving[..., 0], driving[..., 1], reference[..., 0], reference[..., 1]
  var = mean(dy * dy) - mean(dy) ** 2
  ok = (var > 1e-12) & (w.sum(-1) >= 2)
  a = jnp.where(ok, (mean(dy * ry) - mean(dy) * mean(ry)) / jnp.where(ok, var, 1.0), 1.0)
  b_y = mean(ry) - a * mean(dy)
  b_x = mean(rx - a[..., None] * dx)
  rotation = jnp.broadcast_to(jnp.eye(2, dtype=jnp.float32), a.shape + (2, 2))
  return similarity.Similarity(a, rotation, jnp.stack([b_x, b_y], -1))


def svd_only(reference, reference_scores, driving, driving_scores) -> similarity.Similarity:
  return similarity.procrustes(driving, reference, _present_pairs(reference_scores, driving_scores))
