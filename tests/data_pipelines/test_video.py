"""Decoding, frame sampling at a target fps, resize/pad and writing, on videos the test writes."""
import numpy as np
import pytest

from data_pipelines import video


def _ramp_video(n, h, w):
  """Frame i is uniformly gray at level 8*i, so decoded frames reveal which source frame they are."""
  return np.broadcast_to((np.arange(n, dtype=np.uint8) * 8)[:, None, None, None], (n, h, w, 3)).copy()


@pytest.mark.parametrize("ext", ["mp4", "gif"])
def test_sample_at_target_fps(tmp_path, ext):
  path = str(tmp_path / f"ramp.{ext}")
  video.write_video(path, _ramp_video(30, 40, 48), fps=20)
  info = video.probe(path)
  assert (info.height, info.width) == (40, 48)
  clip = video.load_clip(path, num_frames=4, fps=5, height=40, width=48)
  expected = np.floor(np.arange(4) / 5 * info.fps + 1e-6).astype(int) * 8   # every 4th frame
  np.testing.assert_allclose(clip[:, 20, 24, 0], expected, atol=3)
  assert clip.shape == (4, 40, 48, 3) and clip.dtype == np.uint8


def test_vertical_video_fits_height_and_pads_width(tmp_path):
  frames = np.full((9, 96, 64, 3), 200, np.uint8)     # portrait 2:3
  path = video.write_video(str(tmp_path / "v.mp4"), frames, fps=8)
  clip = video.load_clip(path, num_frames=9, fps=8, height=48, width=72)
  assert clip.shape == (9, 48, 72, 3)
  content = clip[0, 24, :, 0] > 100
  # 96x64 scaled to height 48 is 48x32, centered in width 72: columns 20..51.
  assert content.sum() == 32 and content[20] and content[51] and not content[19] and not content[52]
  assert np.all(clip[:, :, :18] == 0) and np.all(clip[:, :, 54:] == 0)


def test_landscape_cover_crop_and_box_mapping():
  frames = np.zeros((1, 60, 120, 3), np.uint8)       # 1:2, wider than 2:3 -> cover + crop
  frames[0, 20:40, 50:70] = 255
  out = video.resize_frames(frames, 40, 60)
  box = video.resize_boxes(np.array([[50, 20, 70, 40]]), 60, 120, 40, 60)[0]
  ys, xs = np.nonzero(out[0, :, :, 0] > 127)
  np.testing.assert_allclose([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], box, atol=1)


def test_too_short_and_corrupt_videos_name_the_file(tmp_path):
  path = video.write_video(str(tmp_path / "short.mp4"), _ramp_video(10, 32, 32), fps=10)
  with pytest.raises(video.VideoError, match="short.mp4: too short"):
    video.load_clip(path, num_frames=8, fps=4, height=32, width=32)
  bad = tmp_path / "broken.mp4"
  bad.write_bytes(open(path, "rb").read()[:200])
  with pytest.raises(video.VideoError, match="broken.mp4"):
    video.load_clip(str(bad), num_frames=2, fps=4, height=32, width=32)
  with pytest.raises(video.VideoError, match="missing.webm"):
    video.probe(str(tmp_path / "missing.webm"))


def test_model_range_round_trip():
  x = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, -1)
  y = video.to_model_range(x)
  assert y.min() == -1 and y.max() == 1
  np.testing.assert_array_equal(video.to_uint8(y), x)
