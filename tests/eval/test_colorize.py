"""Depth colorization: the inferno table, per-clip normalization, masks, and latent visualization."""
import math

import numpy as np
import pytest

from sem_repa_jax.eval import colorize
from sem_repa_jax.models.latent_codec import LatentCodec

# Entries of matplotlib's inferno table (matplotlib/_cm_listed.py), index -> rgb in [0, 1].
_MATPLOTLIB_INFERNO = {0: (0.001462, 0.000466, 0.013866), 1: (0.002267, 0.001270, 0.018570),
                       128: (0.735683, 0.215906, 0.330245), 254: (0.982257, 0.994109, 0.631017),
                       255: (0.988362, 0.998364, 0.644924)}


def _luma(rgb):
  return np.asarray(rgb, np.float64) @ np.array([0.2126, 0.7152, 0.0722])


def test_inferno_table_is_close_to_matplotlib_and_brightness_rises():
  lut = colorize.INFERNO
  assert lut.shape == (256, 3) and lut.dtype == np.uint8
  for i, rgb in _MATPLOTLIB_INFERNO.items():
    np.testing.assert_allclose(lut[i], np.array(rgb) * 255, atol=5.0, err_msg=f"entry {i}")
  assert np.all(np.diff(_luma(lut)) > 0)


def test_near_is_bright_with_per_clip_normalization():
  depth = np.array([[[1.0, 2.0]], [[3.0, 5.0]]])            # (F=2, H=1, W=2): one min/max for the clip
  rgb = colorize.colorize_depth(depth)
  assert rgb.shape == (2, 1, 2, 3) and rgb.dtype == np.uint8
  # t = (5 - d) / 4 -> 1, 0.75, 0.5, 0 -> indices round(255 t)
  expected = colorize.INFERNO[[255, round(0.75 * 255), 128, 0]].reshape(2, 1, 2, 3)
  np.testing.assert_array_equal(rgb, expected)
  luma = _luma(rgb).ravel()
  assert np.all(np.diff(luma) < 0)                          # farther is darker
  np.testing.assert_array_equal(colorize.colorize_depth(depth, near_is_bright=False),
                                colorize.INFERNO[[0, round(0.25 * 255), 128, 255]].reshape(2, 1, 2, 3))
  np.testing.assert_array_equal(colorize.colorize_depth(10.0 - depth, kind="disparity"), expected)


def test_mask_and_non_finite_pixels_are_black_and_ignored():
  depth = np.array([[[1.0, 3.0, 1000.0, np.nan]]])
  mask = np.array([[[True, True, False, True]]])
  rgb = colorize.colorize_depth(depth, mask)
  np.testing.assert_array_equal(rgb[0, 0, :2], colorize.INFERNO[[255, 0]])   # 1000 did not set the max
  np.testing.assert_array_equal(rgb[0, 0, 2:], 0)
  np.testing.assert_array_equal(colorize.colorize_depth(np.full((1, 2, 2), 4.0)),
                                np.broadcast_to(colorize.INFERNO[128], (1, 2, 2, 3)))
  np.testing.assert_array_equal(colorize.colorize_depth(np.ones((1, 2, 2)), np.zeros((1, 2, 2), bool)), 0)


def test_float_variant_is_the_vae_pixel_range():
  depth = np.random.default_rng(0).uniform(1, 2, (3, 4, 5))
  f = colorize.colorize_depth_float(depth)
  assert f.dtype == np.float32 and f.min() >= -1 and f.max() <= 1
  np.testing.assert_array_equal(f, colorize.colorize_depth(depth).astype(np.float32) / 127.5 - 1)


def test_colorize_errors():
  with pytest.raises(ValueError, match=r"expected depth \(F, H, W\); got shape \(4, 5\)"):
    colorize.colorize_depth(np.ones((4, 5)))
  with pytest.raises(ValueError, match=r"valid_mask of shape \(1, 4, 4\) does not match depth of shape \(1, 4, 5\)"):
    colorize.colorize_depth(np.ones((1, 4, 5)), np.ones((1, 4, 4), bool))
  with pytest.raises(ValueError, match="kind must be one of"):
    colorize.colorize_depth(np.ones((1, 4, 5)), kind="inverse")


def test_depth_latent_to_visual_recovers_the_colorized_depth_through_the_codec():
  codec = LatentCodec(spatial_factor=2)
  depth = np.random.default_rng(1).uniform(1, 3, (5, 8, 8))
  colors = colorize.colorize_depth(depth)
  mean, _ = codec.apply({}, colors[None].astype(np.float32) / 127.5 - 1, method="encode")
  scaled = mean * codec.scaling_factor
  shown = colorize.depth_latent_to_visual(codec, {}, scaled, scaling_factor=codec.scaling_factor)
  assert shown.shape == (1, 5, 8, 8, 3) and shown.dtype == np.uint8
  np.testing.assert_array_equal(shown[0], colors)
  assert math.isclose(codec.scaling_factor, math.sqrt(3))
