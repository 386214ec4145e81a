"""StableAnimator's pose alignment at inference: the driving skeletons mapped onto the reference
person's size and position by one affine map per clip, fitted by least squares (the official
skeleton extraction), before they are drawn.

  points: the reference's body points among ALIGNMENT_POINTS (nose, neck, shoulders, hips, knees,
          ankles, eyes, ears) that it has (score > 0)
  y:  a_y, b_y = the degree-1 least-squares fit of reference y ~ a_y * driving y over every
      driving frame's copy of those points
  x:  a_x = a_y (one scale; the official's aspect factor is 1), b_x = mean(reference x - a_x *
      driving x) over the same pairs
  every body, hand and face point of every frame -> (a_x x + b_x, a_y y + b_y)
Coordinates are the keypoint format's normalized (x / W, y / H). A driving point the estimator
missed (score 0) leaves the fit (the official fits it at its placeholder coordinates) and stays
missing; StableAnimator++'s learned alignment is sem_repa_jax/methods/pose_alignment/.
"""
import dataclasses

import numpy as np

from data_pipelines.poses.keypoints import PoseKeypoints
# OpenPose indices of the points the official fit uses (shared with the batched JAX version).
from sem_repa_jax.methods.pose_alignment.baselines import ALIGNMENT_POINTS


def fit_alignment(reference: PoseKeypoints, driving: PoseKeypoints):
  """(scale (2,), offset (2,)) of the map x -> scale * x + offset taking the driving clip's
  skeletons onto the reference (one frame)."""
  if reference.stacked or not driving.stacked:
    raise ValueError("fit_alignment: reference must be one frame and driving a clip "
                     f"(got body shapes {reference.body.shape} and {driving.body.shape})")
  points = [i for i in ALIGNMENT_POINTS if reference.body_scores[i] > 0]
  if len(points) < 2:
    raise ValueError(f"the reference pose has {len(points)} of the alignment points "
                     f"{ALIGNMENT_POINTS}: at least 2 are needed to fit a scale")
  ref = np.tile(reference.body[points], (len(driving), 1, 1))                # (F, P, 2)
  drv = driving.body[:, points]
  seen = driving.body_scores[:, points] > 0
  if seen.sum() < 2:
    raise ValueError("the driving poses have fewer than 2 detected alignment points in all")
  ref, drv = ref[seen], drv[seen]                                            # (N, 2)
  a_y, b_y = np.polyfit(drv[:, 1].astype(np.float64), ref[:, 1].astype(np.float64), 1)
  b_x = np.mean(ref[:, 0] - a_y * drv[:, 0])
  return np.array([a_y, a_y], np.float32), np.array([b_x, b_y], np.float32)


def apply_alignment(driving: PoseKeypoints, scale, offset) -> PoseKeypoints:
  """Every body, hand and face point moved by scale * p + offset; missing points stay (0, 0)."""
  moved = {}
  for name, scores in (("body", "body_scores"), ("hands", "hand_scores"), ("face", "face_scores")):
    points = getattr(driving, name)
    moved[name] = np.where((getattr(driving, scores) > 0)[..., None], points * scale + offset,
                           points)
  return dataclasses.replace(driving, **moved)


def align_to_reference(reference: PoseKeypoints, driving: PoseKeypoints) -> PoseKeypoints:
  """The driving clip's keypoints aligned onto the reference (fit_alignment + apply_alignment)."""
  return apply_alignment(driving, *fit_alignment(reference, driving))


def align_learned(reference: PoseKeypoints, driving: PoseKeypoints, module, variables,
                  image_size=None) -> PoseKeypoints:
  """The driving clip aligned onto the reference by StableAnimator++'s learned aligner (an exported
  'pose-aligner' folder, load_pretrained): one similarity per driving frame from its body points,
  applied to body, hands and face in isotropic coordinates (keypoints.isotropic) of `image_size`
  (default: the driving keypoints' own). Missing points stay missing."""
  import jax
  import jax.numpy as jnp
  from data_pipelines.poses.keypoints import from_isotropic, isotropic
  from sem_repa_jax.methods.pose_alignment import similarity
  if reference.stacked or not driving.stacked:
    raise ValueError("align_learned: reference must be one frame and driving a clip "
                     f"(got body shapes {reference.body.shape} and {driving.body.shape})")
  size = image_size or driving.image_size or reference.image_size
  if size is None:
    raise ValueError("align_learned: neither keypoints records its image size; pass image_size "
                     "(H, W) so that x and y share one unit")
  n = len(driving)
  ref = np.broadcast_to(isotropic(reference.body, size), (n, 18, 2))
  ref_s = np.broadcast_to(reference.body_scores, (n, 18))
  fit = jax.jit(lambda *a: module.apply(variables, *a)["final"])(
      jnp.asarray(ref), jnp.asarray(ref_s), jnp.asarray(isotropic(driving.body, size)),
      jnp.asarray(driving.body_scores))
  moved = {}
  for name, scores in (("body", "body_scores"), ("hands", "hand_scores"), ("face", "face_scores")):
    points = getattr(driving, name)
    flat = isotropic(points, size).reshape(n, -1, 2)
    out = from_isotropic(np.asarray(similarity.apply(fit, jnp.asarray(flat))), size)
    moved[name] = np.where((getattr(driving, scores) > 0)[..., None], out.reshape(points.shape),
                           points)
  return dataclasses.replace(driving, **moved)
