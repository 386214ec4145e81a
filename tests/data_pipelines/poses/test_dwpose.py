"""The DWPose teacher end to end on small ONNX graphs (dwpose_stubs.py) with the real files'
input/output names and shapes, whose outputs the tests set."""
import numpy as np
import pytest

from data_pipelines.poses import dwpose
from tests.data_pipelines.poses.dwpose_stubs import yolox_cell, constant_model, stub_files


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  return stub_files(tmp_path_factory.mktemp("dwpose"))


def test_yolox_output_gives_the_expected_boxes(files):
  image = np.zeros((160, 320, 3), np.uint8)          # letterboxed at ratio 2
  persons = dwpose.DWPose(files["det"], files["pose"]).detect(image)
  np.testing.assert_allclose(persons.boxes, [[74, 25, 90, 57], [240, 80, 256, 96]], atol=1e-4)
  np.testing.assert_allclose(persons.scores, [0.9, 0.5], rtol=1e-6)
  blob, r = dwpose.letterbox(np.full((160, 320, 3), 7, np.uint8))
  assert r == 2 and blob.shape == (1, 3, 640, 640)
  assert blob[0, :, 319, 639].tolist() == [7, 7, 7] and blob[0, :, 320, 0].tolist() == [114] * 3


def _official_openpose(points, scores):
  """The 133 -> 134 insertion and index remap of DWPose's wholebody.py, written out here."""
  info = np.concatenate([points, scores[:, None]], -1)[None]
  neck = info[:, [5, 6]].mean(1)
  neck[:, 2] = np.logical_and(info[:, 5, 2] > 0.3, info[:, 6, 2] > 0.3)
  new = np.insert(info, 17, neck, axis=1)
  mm = [17, 6, 8, 10, 7, 9, 12, 14, 16, 13, 15, 2, 1, 4, 3]
  op = [1, 2, 3, 4, 6, 7, 8, 9, 10, 12, 13, 14, 15, 16, 17]
  new[:, op] = new[:, mm]
  return new[0]


def test_simcc_output_gives_the_expected_keypoints(files):
  teacher = dwpose.DWPose(files["det"], files["pose"])
  assert teacher.pose_wh == (288, 384) and teacher.det_hw == (640, 640)
  kp = teacher(np.zeros((160, 320, 3), np.uint8))
  # Box A (74, 25, 90, 57): center (82, 41), 1.25 x (16, 32) = (20, 40) widened to (30, 40).
  k = np.arange(133)
  pts = np.stack([(2 * k + 10) / 2 / 288 * 30 + 82 - 15, (3 * k + 5) / 2 / 384 * 40 + 41 - 20], -1)
  scores = np.minimum(0.8, 0.6 + k / 1000)
  pts[[3, 6]] = [-0.5 / 288 * 30 + 82 - 15, -0.5 / 384 * 40 + 41 - 20]    # location -1
  scores[[3, 6]] = -0.2
  want = _official_openpose(pts, scores)
  size = np.array([320, 160])
  np.testing.assert_allclose(kp.body, want[:18, :2] / size, atol=2e-6)
  np.testing.assert_allclose(kp.body_scores, np.maximum(want[:18, 2], 0), atol=1e-6)
  assert kp.body_scores[1] == 0 and kp.body_scores[2] == 0 and kp.body_scores[17] == 0
  np.testing.assert_allclose(kp.face, want[24:92, :2] / size, atol=2e-6)
  np.testing.assert_allclose(kp.hands, np.stack([want[92:113, :2], want[113:, :2]]) / size,
                             atol=2e-6)
  np.testing.assert_allclose(kp.hand_scores[1], want[113:, 2], atol=1e-6)
  assert kp.image_size == (160, 320)
  # No person found: the whole image is the box, as the official code does.
  whole = dwpose.DWPose(files["none"], files["pose"])(np.zeros((64, 48, 3), np.uint8))
  c, s = np.array([24, 32]), np.array([60.0, 80.0])      # 1.25 x (48, 64)
  np.testing.assert_allclose(whole.face[0] * [48, 64],
                             np.array([(2 * 23 + 10) / 576, (3 * 23 + 5) / 768]) * s + c - s / 2,
                             atol=1e-4)


def test_keypoints_follow_the_image_through_crop_and_back_projection(files):
  out = np.zeros((1, 8400, 85), np.float32)
  # image box (8, 8, 40, 56) of a 64x48 image (letterbox ratio 10): center (240, 320), 320 x 480
  yolox_cell(out, 32, 10, 7, [0.5, 0.0, np.log(10), np.log(15), 1.0, 1.0])
  det = constant_model(files["det"].replace("yolox_l", "yolox_person"), "images",
                       [1, 3, 640, 640], {"output": out})
  teacher = dwpose.DWPose(det, files["spot"])
  for x, y in [(20, 30), (13, 47), (33, 12)]:
    image = np.zeros((64, 48, 3), np.uint8)
    image[y, x] = 255
    kp = teacher(image)
    np.testing.assert_allclose(kp.body * [48, 64], np.full((18, 2), [x, y]), atol=0.2)
    np.testing.assert_allclose(kp.hands * [48, 64], np.full((2, 21, 2), [x, y]), atol=0.2)
    assert np.all(kp.body_scores > 0.3) and np.all(kp.face_scores > 0.3)


def test_person_choice_and_missing_files(files, tmp_path):
  p = dwpose.Persons(np.array([[0, 0, 10, 10], [0, 0, 30, 20]], np.float32), np.array([0.9, 0.5]))
  assert dwpose.select_person(p, (40, 40), "score").tolist() == [0, 0, 10, 10]
  assert dwpose.select_person(p, (40, 40), "largest").tolist() == [0, 0, 30, 20]
  with pytest.raises(ValueError, match="person rule 'biggest'"):
    dwpose.DWPose(files["det"], files["pose"], person="biggest")
  with pytest.raises(FileNotFoundError, match=r"nowhere/yolox_l.onnx: no YOLOX .*DWPose release"):
    dwpose.DWPose(str(tmp_path / "nowhere" / "yolox_l.onnx"), files["pose"])
  with pytest.raises(FileNotFoundError, match=r"dw-ll_ucoco_384.onnx: no DWPose .*docs/poses.md"):
    dwpose.DWPose(files["det"], str(tmp_path / "dw-ll_ucoco_384.onnx"))
  with pytest.raises(ValueError, match=r"8399 predictions"):
    dwpose.decode_yolox(np.zeros((1, 8399, 85), np.float32))
