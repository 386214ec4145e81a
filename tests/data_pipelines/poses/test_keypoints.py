"""The shared keypoint format: shapes checked, .npz round trip, clear errors on bad files."""
import numpy as np
import pytest

from data_pipelines.poses import keypoints as kp_lib
from data_pipelines.poses.keypoints import (BODY_LIMBS, BODY_NAMES, KeypointsFileError,
                                            PoseKeypoints, load_keypoints, save_keypoints)


def _random(rng, frames=None, size=(30, 40)):
  lead = () if frames is None else (frames,)
  return PoseKeypoints(*(rng.random(lead + t).astype(np.float32)
                         for t in kp_lib.FIELDS.values()), image_size=size)


def test_names_and_limbs_are_openpose():
  assert len(BODY_NAMES) == 18 and BODY_NAMES[1] == "neck" and BODY_NAMES[17] == "l_ear"
  assert len(BODY_LIMBS) == 19 and BODY_LIMBS[0] == (1, 2) and BODY_LIMBS[12] == (1, 0)
  assert len(kp_lib.HAND_EDGES) == 20 and kp_lib.HAND_EDGES[4] == (0, 5)


def test_round_trip_of_a_list_and_of_stacked_frames(tmp_path):
  rng = np.random.default_rng(0)
  frames = [_random(rng) for _ in range(3)]
  path = save_keypoints(str(tmp_path / "a" / "k.npz"), frames)
  back = load_keypoints(path)
  assert len(back) == 3 and back.image_size == (30, 40)
  for n in kp_lib.FIELDS:
    np.testing.assert_array_equal(getattr(back, n)[1], getattr(frames[1], n))
  np.testing.assert_array_equal(back.frame(2).hands, frames[2].hands)
  save_keypoints(path, back)
  np.testing.assert_array_equal(load_keypoints(path).face, back.face)
  single = save_keypoints(str(tmp_path / "one.npz"), frames[0])
  assert len(load_keypoints(single)) == 1
  assert not list(tmp_path.glob("**/*.tmp*"))


def test_shapes_are_checked():
  with pytest.raises(ValueError, match="body_scores.*leading shape"):
    PoseKeypoints(np.zeros((2, 18, 2)), np.zeros((3, 18)), np.zeros((2, 2, 21, 2)),
                  np.zeros((2, 2, 21)), np.zeros((2, 68, 2)), np.zeros((2, 68)))
  with pytest.raises(ValueError, match=r"body: shape \(17, 2\)"):
    PoseKeypoints(np.zeros((17, 2)), *(np.zeros(t) for t in list(kp_lib.FIELDS.values())[1:]))


def test_bad_files_name_the_file_and_field(tmp_path):
  with pytest.raises(KeypointsFileError, match="no keypoints file"):
    load_keypoints(str(tmp_path / "none.npz"))
  junk = tmp_path / "junk.npz"
  junk.write_bytes(b"not a zip")
  with pytest.raises(KeypointsFileError, match="junk.npz: not a keypoints .npz"):
    load_keypoints(str(junk))
  good = dict(np.load(save_keypoints(str(tmp_path / "k.npz"), _random(np.random.default_rng(1), 4))))
  np.savez(tmp_path / "missing.npz", **{k: v for k, v in good.items() if k != "face"})
  with pytest.raises(KeypointsFileError, match=r"missing.npz: missing field\(s\) \['face'\]"):
    load_keypoints(str(tmp_path / "missing.npz"))
  np.savez(tmp_path / "short.npz", **{**good, "hand_scores": good["hand_scores"][:3]})
  with pytest.raises(KeypointsFileError, match=r"'hand_scores' has shape \(3, 2, 21\); "
                                               r"expected \(4, 2, 21\)"):
    load_keypoints(str(tmp_path / "short.npz"))
