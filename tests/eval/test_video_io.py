"""GIF and PNG-strip writers for report assets."""
import os

import numpy as np
import pytest
from PIL import Image

from sem_repa_jax.eval import video_io


def _frames(f=5, h=6, w=7, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (f, h, w, 3), dtype=np.uint8)


def test_gif_keeps_frames_size_and_timing(tmp_path):
  path = video_io.write_gif(str(tmp_path / "a" / "v.gif"), _frames(), fps=10)
  with Image.open(path) as im:
    assert im.n_frames == 5 and im.size == (7, 6)
    durations = []
    for i in range(im.n_frames):
      im.seek(i)
      durations.append(im.info["duration"])
  assert durations == [100] * 5
  assert os.listdir(tmp_path / "a") == ["v.gif"]            # no temporary left behind


def test_gif_of_grey_frames_and_errors(tmp_path):
  grey = np.zeros((3, 4, 4), np.uint8) + np.arange(3, dtype=np.uint8)[:, None, None] * 80
  with Image.open(video_io.write_gif(str(tmp_path / "g.gif"), grey)) as im:
    assert im.n_frames == 3
    im.seek(2)
    assert np.asarray(im.convert("RGB"))[0, 0].tolist() == [160, 160, 160]
  with pytest.raises(ValueError, match="expected uint8 frames"):
    video_io.write_gif(str(tmp_path / "x.gif"), np.zeros((2, 4, 4, 3), np.float32))
  with pytest.raises(ValueError, match=r"got shape \(2, 4, 4, 2\)"):
    video_io.write_gif(str(tmp_path / "x.gif"), np.zeros((2, 4, 4, 2), np.uint8))
  assert not os.path.exists(tmp_path / "x.gif")


def test_strip_subsamples_evenly_and_png_round_trips(tmp_path):
  frames = _frames(f=9)
  strip = video_io.frame_strip(frames, max_frames=3, gap=1)
  assert strip.shape == (6, 3 * 7 + 2, 3)
  for k, i in enumerate([0, 4, 8]):
    np.testing.assert_array_equal(strip[:, k * 8:k * 8 + 7], frames[i])
  assert np.all(strip[:, 7] == 255)
  path = video_io.write_png(str(tmp_path / "s.png"), strip)
  np.testing.assert_array_equal(np.asarray(Image.open(path)), strip)


def test_to_uint8_maps_the_pixel_range():
  np.testing.assert_array_equal(video_io.to_uint8(np.array([-2.0, -1.0, 0.0, 1.0, 3.0])), [0, 0, 128, 255, 255])
