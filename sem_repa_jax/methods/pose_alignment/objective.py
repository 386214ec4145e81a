"""Training and measuring the pose aligner (StableAnimator++ Sec. III-A, eq. 12), pure functions.

Training pairs are two frames of one clip: the reference frame, and a driving frame whose pose is
moved by a random similarity `misalign` to simulate a reference and a driving video that differ in
body size, position and rotation. The aligner sees (reference, misaligned driving) and must undo the
perturbation: the loss is the mean Euclidean distance between the aligned driving points and the
unperturbed ones, over the points present in the driving frame.

A perturbation (Misalignment): rotation uniform in +-max_rotation_deg and scale log-uniform in
scale_range, both about the driving pose's centroid, then a shift uniform in +-max_translation per
axis (in the isotropic unit: the frame's longer side is 1). Each driving point is also dropped
(score 0 in the aligner's input, as a detector misses points) with probability drop_rate.

`alignment_error` is the benchmark's figure: that distance over the ground truth's torso length
(neck to the midpoint of the hips), per pair, so figures compare across image and body sizes.
"""
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from sem_repa_jax.methods.pose_alignment import similarity

NECK, R_HIP, L_HIP = 1, 8, 11


@dataclass(frozen=True)
class Misalignment:
  max_rotation_deg: float = 30.0
  scale_range: tuple = (0.5, 2.0)
  max_translation: float = 0.3
  drop_rate: float = 0.0


def misalign(key, driving, driving_scores, m: Misalignment):
  """(misaligned driving (B, K, 2), its input scores (B, K), the Similarity applied)."""
  k_rot, k_scale, k_shift, k_drop = jax.random.split(key, 4)
  b = driving.shape[0]
  angle = jnp.deg2rad(m.max_rotation_deg) * jax.random.uniform(k_rot, (b,), minval=-1, maxval=1)
  lo, hi = jnp.log(m.scale_range[0]), jnp.log(m.scale_range[1])
  scale = jnp.exp(jax.random.uniform(k_scale, (b,), minval=lo, maxval=hi))
  shift = m.max_translation * jax.random.uniform(k_shift, (b, 2), minval=-1, maxval=1)
  center = similarity.weighted_centroid(driving, (driving_scores > 0).astype(jnp.float32))
  sim = similarity.about(scale, angle, shift, center)
  moved = jnp.where((driving_scores > 0)[..., None], similarity.apply(sim, driving), 0.0)
  kept = jax.random.uniform(k_drop, driving_scores.shape) >= m.drop_rate
  return moved, jnp.where(kept, driving_scores, 0.0), sim


def _distances(aligned, target, target_scores):
  """(distance per point (B, K), presence weight (B, K))."""
  w = (target_scores > 0).astype(jnp.float32)
  return jnp.sqrt(jnp.square(aligned - target).sum(-1) + 1e-12), w


def alignment_loss(aligned, target, target_scores):
  """Eq. 12: the mean Euclidean distance over every present point of the batch."""
  d, w = _distances(aligned, target, target_scores)
  return (w * d).sum() / jnp.maximum(w.sum(), 1.0)


def torso_length(points, scores):
  """|neck - mid-hip| (B,), or nan where one of the three points is missing."""
  ok = (scores[..., NECK] > 0) & (scores[..., R_HIP] > 0) & (scores[..., L_HIP] > 0)
  mid = 0.5 * (points[..., R_HIP, :] + points[..., L_HIP, :])
  return jnp.where(ok, jnp.linalg.norm(points[..., NECK, :] - mid, axis=-1), jnp.nan)


def alignment_error(aligned, target, target_scores):
  """Per pair (B,): mean point distance over the ground truth's torso length."""
  d, w = _distances(aligned, target, target_scores)
  per_pair = (w * d).sum(-1) / jnp.maximum(w.sum(-1), 1.0)
  return per_pair / torso_length(target, target_scores)
