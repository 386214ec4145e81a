"""Clips -> ROOT/<id>/keypoints.npz + poses/frame_<i>.png: resumable, atomic, from DWPose (stub
ONNX files) or from the synthetic generator's keypoints; the command's errors."""
import os

import cv2
import numpy as np
import pytest

from data_pipelines import synthetic, video
from data_pipelines.poses import __main__ as cli
from data_pipelines.poses import annotate, draw
from data_pipelines.poses.keypoints import PoseKeypoints, load_keypoints
from tests.data_pipelines.poses.dwpose_stubs import stub_files


def _read_rgb(path):
  return cv2.imread(path, cv2.IMREAD_COLOR)[..., ::-1]


class CountingTeacher:
  """Keypoints that move with the frame index; counts its calls."""
  def __init__(self):
    self.calls = 0

  def __call__(self, image):
    self.calls += 1
    kp = PoseKeypoints.empty(image_size=image.shape[:2])
    kp.body[:] = np.linspace(0.2, 0.8, 36).reshape(18, 2) * (1 + 0.05 * (self.calls - 1))
    kp.body_scores[:] = 0.9
    kp.face[:] = 0.5
    kp.face_scores[:] = 0.7
    return kp


def test_annotate_frames_writes_the_layout_and_resumes(tmp_path):
  frames = np.zeros((3, 24, 20, 3), np.uint8)
  teacher = CountingTeacher()
  kp = annotate.annotate_frames(frames, str(tmp_path), "clip", teacher, ref_short=40,
                                progress=False)
  assert teacher.calls == 3 and len(kp) == 3 and kp.image_size == (24, 20)
  np.testing.assert_array_equal(load_keypoints(str(tmp_path / "clip" / "keypoints.npz")).body,
                                kp.body)
  pngs = sorted(os.listdir(tmp_path / "clip" / "poses"))
  assert pngs == ["frame_0.png", "frame_1.png", "frame_2.png"]
  for i in range(3):     # the file holds the drawing as RGB (official PNGs: the canvas values)
    img = _read_rgb(str(tmp_path / "clip" / "poses" / f"frame_{i}.png"))
    np.testing.assert_array_equal(img, draw.draw_pose(kp.frame(i), 24, 20, ref_short=40))
  os.remove(tmp_path / "clip" / "poses" / "frame_1.png")
  again = annotate.annotate_frames(frames, str(tmp_path), "clip", CountingTeacher(),
                                   ref_short=40, progress=False)
  np.testing.assert_array_equal(again.body, kp.body)       # keypoints kept, not re-estimated
  assert os.path.isfile(tmp_path / "clip" / "poses" / "frame_1.png")
  assert not [f for f in os.listdir(tmp_path / "clip" / "poses") if ".tmp" in f]
  with pytest.raises(ValueError, match="keypoints.npz: 3 frames, but the clip has 2"):
    annotate.annotate_frames(frames[:2], str(tmp_path), "clip", teacher, progress=False)


def test_synthetic_keypoints_mark_points_outside_the_frame_missing():
  clip = synthetic.render_clip(3, 2, 40, 32)
  kp = annotate.synthetic_keypoints(clip.keypoints, 40, 32)
  inside = (clip.keypoints[..., 0] >= 0) & (clip.keypoints[..., 0] < 32) & \
      (clip.keypoints[..., 1] >= 0) & (clip.keypoints[..., 1] < 40)
  assert inside.any()
  np.testing.assert_array_equal(kp.body_scores, inside.astype(np.float32))
  np.testing.assert_allclose(kp.body[inside], clip.keypoints[inside][:, :2] / [32, 40], rtol=1e-6)
  assert not kp.hand_scores.any() and not kp.face_scores.any() and kp.image_size == (40, 32)
  pts = clip.keypoints.copy()
  pts[0, 4, 0] = -3.0
  assert annotate.synthetic_keypoints(pts, 40, 32).body_scores[0, 4] == 0
  with pytest.raises(ValueError, match=r"\(F, 18, 3\)"):
    annotate.synthetic_keypoints(pts[..., :2], 40, 32)


def test_synthetic_command_writes_every_clip(tmp_path):
  root, out = str(tmp_path / "syn"), str(tmp_path / "anim")
  entries = synthetic.write_dataset(root, num_clips=2, num_frames=3, height=32, width=24, seed=1)
  assert cli.main(["synthetic", "--root", root, "--out", out, "--ref-short", "48"]) == 0
  for e in entries:
    kp = load_keypoints(annotate.keypoints_file(out, e.clip_id))
    h, w = kp.image_size
    img = _read_rgb(os.path.join(annotate.poses_dir(out, e.clip_id), "frame_2.png"))
    np.testing.assert_array_equal(img, draw.draw_pose(kp.frame(2), h, w, ref_short=48))
    assert img.any()


def test_dwpose_command_on_a_video_and_its_errors(tmp_path, capsys):
  models = tmp_path / "models"
  models.mkdir()
  assert cli.main(["dwpose", "--models", str(models), "--video", "v.mp4", "--out",
                   str(tmp_path)]) == 2
  err = capsys.readouterr().err
  assert "models/yolox_l.onnx: no YOLOX person detector" in err and "DWPose release" in err
  stub_files(models)
  vpath = video.write_video(str(tmp_path / "walk.mp4"), np.zeros((2, 160, 320, 3), np.uint8), 8,
                            crf=0)
  assert cli.main(["dwpose", "--models", str(models), "--video", vpath, "--out", str(tmp_path / "o"),
                   "--ref-short", "0"]) == 0
  kp = load_keypoints(str(tmp_path / "o" / "walk" / "keypoints.npz"))
  assert len(kp) == 2 and kp.image_size == (160, 320)
  assert sorted(os.listdir(tmp_path / "o" / "walk" / "poses")) == ["frame_0.png", "frame_1.png"]
  frames = tmp_path / "frames"
  frames.mkdir()
  for i in (0, 2, 10):
    cv2.imwrite(str(frames / f"frame_{i}.png"), np.full((160, 320, 3), i, np.uint8))
  assert cli.main(["dwpose", "--models", str(models), "--frames", str(frames), "--out",
                   str(tmp_path / "o"), "--no-images"]) == 0
  assert len(load_keypoints(str(tmp_path / "o" / "frames" / "keypoints.npz"))) == 3
  assert not os.listdir(tmp_path / "o" / "frames" / "poses")
