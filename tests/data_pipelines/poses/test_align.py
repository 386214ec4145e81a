"""Pose alignment (data_pipelines/poses/align.py) against the official fit written out in numpy
(np.polyfit of y over the reference's alignment points in every driving frame, x scale = y scale,
x offset the mean residual), and on a driving clip that is a known affine copy of the reference."""
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
