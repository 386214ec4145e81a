"""Pose alignment (data_pipelines/poses/align.py) against the official fit written out in numpy
(np.polyfit of y over the reference's alignment points in every driving frame, x scale = y scale,
x offset the mean residual), and on a driving clip that is a known affine copy of the reference."""
import dataclasses

import numpy as np
import pytest

from data_pipelines.poses import align
from data_pipelines.poses.keypoints import PoseKeypoints


def _pose(rng, frames=None):
  lead = () if frames is None else (frames,)
  return PoseKeypoints(body=rng.uniform(0.2, 0.8, lead + (18, 2)),
                       body_scores=np.ones(lead + (18,)),
                       hands=rng.uniform(0.2, 0.8, lead + (2, 21, 2)),
                       hand_scores=np.ones(lead + (2, 21)),
                       face=rng.uniform(0.2, 0.8, lead + (68, 2)),
                       face_scores=np.ones(lead + (68,)))


def test_fit_equals_the_official_formula():
  rng = np.random.default_rng(0)
  ref, drv = _pose(rng), _pose(rng, frames=6)
  ref.body_scores[3] = 0            # not an alignment point: changes nothing
  ref.body_scores[9] = 0            # an alignment point the reference lacks: leaves the fit
  ids = [i for i in align.ALIGNMENT_POINTS if i != 9]
  ay, by = np.polyfit(drv.body[:, ids, 1].flatten(), np.tile(ref.body[ids, 1], 6), 1)
  bx = np.mean(np.tile(ref.body[ids, 0], 6) - drv.body[:, ids, 0].flatten() * ay)
  scale, offset = align.fit_alignment(ref, drv)
  np.testing.assert_allclose(scale, [ay, ay], rtol=1e-5)
  np.testing.assert_allclose(offset, [bx, by], rtol=1e-5, atol=1e-6)


def test_a_scaled_and_shifted_copy_is_mapped_back_and_missing_points_stay_missing():
  rng = np.random.default_rng(1)
  ref = _pose(rng)
  # The driving person: the reference at 0.6x, moved, over 4 frames.
  body = np.stack([0.6 * ref.body + np.array([0.1, 0.25])] * 4)
  drv = PoseKeypoints(body=body, body_scores=np.ones((4, 18)),
                      hands=np.stack([0.6 * ref.hands + np.array([0.1, 0.25])] * 4),
                      hand_scores=np.ones((4, 2, 21)), face=np.zeros((4, 68, 2)),
                      face_scores=np.zeros((4, 68)))
  drv.body_scores[2, 0] = 0
  drv.body[2, 0] = 0.0              # missing in frame 2: out of the fit, left at (0, 0)
  out = align.align_to_reference(ref, drv)
  np.testing.assert_allclose(out.body[[0, 1, 3]], np.stack([ref.body] * 3), atol=1e-5)
  np.testing.assert_allclose(out.body[2, 1:], ref.body[1:], atol=1e-5)
  np.testing.assert_array_equal(out.body[2, 0], [0.0, 0.0])
  np.testing.assert_allclose(out.hands[0], ref.hands, atol=1e-5)
  np.testing.assert_array_equal(out.face, 0.0)


def test_too_few_points_are_one_line_errors():
  rng = np.random.default_rng(2)
  ref, drv = _pose(rng), _pose(rng, frames=2)
  ref.body_scores[:] = 0
  ref.body_scores[0] = 1
  with pytest.raises(ValueError, match="has 1 of the alignment points"):
    align.fit_alignment(ref, drv)
  with pytest.raises(ValueError, match="reference must be one frame"):
    align.fit_alignment(drv, drv)


def test_learned_alignment_moves_body_hands_and_face_by_one_similarity_per_frame():
  """An untrained aligner is the SVD-only fit: a driving clip that is a rotated, scaled and
  shifted copy of the reference (in pixels of a 480 x 720 frame) comes back onto it, its hands and
  face by the same transform; a missing point stays missing."""
  import jax
  from data_pipelines.poses.keypoints import from_isotropic, isotropic
  from sem_repa_jax.methods.pose_alignment import aligner
  rng = np.random.default_rng(3)
  size = (480, 720)
  ref = dataclasses.replace(_pose(rng), image_size=size)
  frames = []
  for angle, scale in ((0.4, 0.6), (-0.3, 1.7)):
    c, s = np.cos(angle), np.sin(angle)
    move = lambda p: from_isotropic(scale * isotropic(p, size) @ np.array([[c, -s], [s, c]]).T  # noqa: E731
                                    + np.array([0.05, -0.1]), size)
    frames.append(PoseKeypoints(move(ref.body), ref.body_scores, move(ref.hands),
                                ref.hand_scores, move(ref.face), ref.face_scores))
  drv = PoseKeypoints.stack(frames)
  drv.hand_scores[1, 0, 3] = 0
  model = aligner.PoseAligner(aligner.PoseAlignerConfig(width=16, heads=2, encoder_layers=1,
                                                        fusion_layers=1))
  variables = model.init(jax.random.key(0), *(np.zeros((1, 18, 2)), np.ones((1, 18))) * 2)
  out = align.align_learned(ref, drv, model, variables, image_size=size)
  for f in range(2):
    np.testing.assert_allclose(out.body[f], ref.body, atol=1e-4)
    np.testing.assert_allclose(out.face[f], ref.face, atol=1e-4)
  np.testing.assert_allclose(out.hands[0], ref.hands, atol=1e-4)
  np.testing.assert_array_equal(out.hands[1, 0, 3], drv.hands[1, 0, 3])
  with pytest.raises(ValueError, match="image size"):
    align.align_learned(dataclasses.replace(ref, image_size=None), drv, model, variables)
