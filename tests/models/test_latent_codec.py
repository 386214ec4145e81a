"""LatentCodec: exact round trip, CogVideoX latent frame layout, posterior, and shape errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sem_repa_jax.models.latent_codec import LOGVAR, LatentCodec


def _video(shape, seed=0):
  return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


@pytest.mark.parametrize("p,t,frames", [(2, 4, 9), (8, 4, 5), (2, 4, 1), (4, 1, 3), (1, 2, 5)])
def test_round_trip_is_exact(p, t, frames):
  codec = LatentCodec(spatial_factor=p, temporal_factor=t)
  video = _video((2, frames, 16, 8, 3))
  variables = codec.init(jax.random.PRNGKey(0), video)
  assert not jax.tree_util.tree_leaves(variables)
  mean, logvar = codec.apply(variables, video, method="encode")
  n = 1 + (frames - 1) // t
  assert mean.shape == (2, n, 16 // p, 8 // p, 3 * p * p * t) == logvar.shape
  assert mean.shape[-1] == codec.latent_channels(3)
  back = codec.apply(variables, mean, method="decode")
  np.testing.assert_array_equal(np.asarray(back), video)
  np.testing.assert_array_equal(np.asarray(codec.apply(variables, video)), video)


def test_latent_layout_matches_causal_vae_frame_groups():
  p, t = 2, 4
  codec = LatentCodec(spatial_factor=p, temporal_factor=t)
  video = _video((1, 9, 4, 6, 3), seed=1)
  mean, _ = codec.apply({}, video, method="encode")
  mean = np.asarray(mean)
  for j in range(mean.shape[1]):
    for y in range(mean.shape[2]):
      for x in range(mean.shape[3]):
        for tt in range(t):
          frame = 0 if j == 0 else 4 * j - 3 + tt   # frame 0 replicated; then frames 4j-3..4j
          for py in range(p):
            for px in range(p):
              for c in range(3):
                ch = ((tt * p + py) * p + px) * 3 + c
                assert mean[0, j, y, x, ch] == video[0, frame, y * p + py, x * p + px, c]


def test_decode_averages_the_copies_of_frame_zero():
  codec = LatentCodec(spatial_factor=2, temporal_factor=4)
  latents = _video((1, 2, 3, 3, 48), seed=2)
  video = np.asarray(codec.apply({}, latents, method="decode"))
  assert video.shape == (1, 5, 6, 6, 3)
  grouped = latents[:, 0].reshape(1, 3, 3, 4, 2, 2, 3)
  expected = grouped.mean(axis=3).transpose(0, 1, 3, 2, 4, 5).reshape(1, 6, 6, 3)
  np.testing.assert_allclose(video[:, 0], expected, rtol=0, atol=1e-6)


def test_posterior_sample_is_the_mean_and_scaling_gives_unit_variance():
  codec = LatentCodec()
  video = _video((2, 5, 16, 16, 3), seed=3)
  mean, logvar = codec.apply({}, video, method="encode")
  assert float(logvar.min()) == float(logvar.max()) == LOGVAR
  eps = jax.random.normal(jax.random.PRNGKey(1), mean.shape)
  sample = mean + jnp.exp(0.5 * logvar) * eps
  np.testing.assert_array_equal(np.asarray(sample), np.asarray(mean))
  std = float(jnp.std(mean * codec.scaling_factor))
  assert abs(std - 1.0) < 0.02


def test_output_dtype():
  codec = LatentCodec(dtype=jnp.bfloat16)
  mean, logvar = codec.apply({}, _video((1, 1, 4, 4, 3)), method="encode")
  assert mean.dtype == jnp.bfloat16 and logvar.dtype == jnp.bfloat16
  assert codec.apply({}, mean, method="decode").dtype == jnp.bfloat16


@pytest.mark.parametrize("shape,message", [
    ((1, 4, 8, 8, 3), r"\(1, 4, 8, 8, 3\) has 4 frames; expected 1 \+ 4k"),
    ((1, 0, 8, 8, 3), r"has 0 frames"),
    ((1, 5, 7, 8, 3), r"\(1, 5, 7, 8, 3\) has H=7, W=8; expected both divisible by spatial_factor=2"),
    ((5, 8, 8, 3), r"expected a video \(B, F, H, W, C\); got shape \(5, 8, 8, 3\)"),
])
def test_encode_rejects_bad_shapes(shape, message):
  with pytest.raises(ValueError, match=message):
    LatentCodec().apply({}, np.zeros(shape, np.float32), method="encode")


def test_decode_and_factors_reject_bad_values():
  with pytest.raises(ValueError, match=r"latents of shape \(1, 2, 4, 4, 47\).*multiple of .* = 16"):
    LatentCodec().apply({}, np.zeros((1, 2, 4, 4, 47), np.float32), method="decode")
  with pytest.raises(ValueError, match=r"temporal_factor must be a power of two.*got 3"):
    LatentCodec(temporal_factor=3).apply({}, np.zeros((1, 4, 4, 4, 3), np.float32), method="encode")
  with pytest.raises(ValueError, match=r"spatial_factor must be a positive int; got 0"):
    LatentCodec(spatial_factor=0).apply({}, np.zeros((1, 1, 4, 4, 3), np.float32), method="encode")
