"""An image of another aspect than the frames is cropped or padded to it (or stretched when asked),
and the sample job says so; its other inputs are checked by name."""
import numpy as np
import pytest
from PIL import Image

from sem_repa_jax.jobs import sample as sample_job
from sem_repa_jax.pipelines.images import fit_to_aspect


def _portrait():
  x = np.zeros((120, 60, 3), np.uint8)
  x[:, :, 0] = np.arange(120)[:, None]           # rows numbered in red
  return Image.fromarray(x)


def test_crop_keeps_the_center_at_the_frames_aspect():
  out, note = fit_to_aspect(_portrait(), 48, 72)   # landscape 3:2 frames
  assert out.size == (60, 40)
  assert np.asarray(out)[0, 0, 0] == 40 and np.asarray(out)[-1, 0, 0] == 79   # rows 40..79
  assert "image 60x120 center-cropped to 60x40 (the 72:48 aspect" in note


def test_pad_keeps_the_whole_image_on_black_bars():
  padded, note = fit_to_aspect(_portrait(), 48, 72, "pad")
  assert padded.size == (180, 120)
  a = np.asarray(padded)
  assert a[:, :60].max() == 0 and a[:, 120:].max() == 0 and a[119, 60, 0] == 119
  assert "padded to 180x120 with black bars" in note


def test_stretch_and_matching_aspect_change_nothing():
  img = _portrait()
  same, note = fit_to_aspect(img, 48, 72, "stretch")
  assert same is img and "stretched" in note
  square = Image.new("RGB", (30, 20))
  assert fit_to_aspect(square, 48, 72) == (square, "")
  with pytest.raises(ValueError, match="image fit 'zoom': expected one of crop, pad, stretch"):
    fit_to_aspect(img, 48, 72, "zoom")


def test_sample_job_names_empty_prompt_path_and_zero_samples(tmp_path):
  from configs import sample_cogvideox
  with pytest.raises(ValueError, match="config.prompt_embeds is empty"):
    sample_job.load_prompt_embeds("")
  _portrait().save(tmp_path / "face.png")
  c = sample_cogvideox.get_config()
  c.image, c.model_dir, c.num_samples = str(tmp_path / "face.png"), str(tmp_path), 0
  with pytest.raises(ValueError, match="config.num_samples = 0: expected at least 1"):
    sample_job.run(c)
