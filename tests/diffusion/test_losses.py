"""Shared denoising losses: the v-MSE, the capped x0-weighted form, and their agreement."""
import jax.numpy as jnp
import numpy as np

from sem_repa_jax.diffusion import losses, parameterization, schedules

AB = schedules.cogvideox_alphas_cumprod(1.0)


def _batch():
  rng = np.random.default_rng(0)
  x0 = jnp.asarray(rng.standard_normal((3, 2, 4, 4, 5)), jnp.float32)
  eps = jnp.asarray(rng.standard_normal(x0.shape), jnp.float32)
  v_hat = jnp.asarray(rng.standard_normal(x0.shape), jnp.float32)
  return x0, eps, v_hat, jnp.array([100, 500, 900])


def test_v_mse_equals_the_x0_error_weighted_by_one_over_one_minus_alpha_bar():
  x0, eps, v_hat, t = _batch()
  x_t = schedules.add_noise(AB, x0, eps, t)
  x0_hat = parameterization.v_to_x0(AB, x_t, v_hat, t)
  v = parameterization.velocity(AB, x0, eps, t)
  l_v = losses.denoising_loss(v_hat, x0_hat, x0, eps, AB, t)
  assert float(l_v) == float(jnp.mean((v_hat - v) ** 2))
  uncapped = losses.denoising_loss(v_hat, x0_hat, x0, eps, AB, t, max_weight=1e9)
  np.testing.assert_allclose(uncapped, l_v, rtol=1e-4)
  # A cap below the weights of t = 100 (1 / (1 - ab) ~ 9) bounds them; t = 900 (weight ~1) is kept.
  capped = losses.denoising_loss(v_hat, x0_hat, x0, eps, AB, t, max_weight=2.0)
  w = np.minimum(1 / (1 - AB[np.array([100, 500, 900])]), 2.0)
  err = np.asarray((x0_hat - x0) ** 2)
  np.testing.assert_allclose(capped, np.mean(w[:, None, None, None, None] * err), rtol=1e-5)
  assert float(capped) < float(l_v)
