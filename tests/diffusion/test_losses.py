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


# --- EDM (continuous sigmas) ----------------------------------------------------------------------

def test_edm_loss_weight_is_karras_lambda_and_one_over_c_out_squared():
  sigma = np.array([0.002, 0.3, 1.0, 7.0, 700.0])
  for sd in (1.0, 0.5):
    want = (sigma ** 2 + sd ** 2) / (sigma * sd) ** 2
    np.testing.assert_allclose(losses.edm_loss_weight(sigma, sd), want, rtol=1e-6)
    _, c_out, _, _ = parameterization.edm_v_preconditioning(sigma, sd)
    np.testing.assert_allclose(losses.edm_loss_weight(sigma, sd), 1 / c_out ** 2, rtol=1e-5)
  np.testing.assert_allclose(losses.edm_loss_weight(sigma), (1 + sigma ** 2) / sigma ** 2, rtol=1e-6)


def _edm_batch():
  rng = np.random.default_rng(1)
  x0 = rng.standard_normal((3, 2, 4, 6, 4)).astype(np.float32)
  eps = rng.standard_normal(x0.shape).astype(np.float32)
  out = rng.standard_normal(x0.shape).astype(np.float32)      # the network's raw output F
  sigma = np.array([0.05, 1.3, 40.0], np.float32)
  mask = (rng.uniform(size=(3, 2, 32, 48)) > 0.7).astype(np.float32)   # face mask at pixel size
  return x0, eps, out, sigma, mask


def test_edm_denoising_loss_on_x0_with_a_weight_map():
  x0, eps, out, sigma, _ = _edm_batch()
  pre = parameterization.edm_training_preconditioning(sigma, x0.ndim)
  x = x0 + sigma[:, None, None, None, None] * eps
  x0_hat = np.asarray(pre.to_x0(jnp.asarray(x), jnp.asarray(out)))
  s = sigma[:, None, None, None, None].astype(np.float64)
  want_x0 = x / (s ** 2 + 1) - s / np.sqrt(s ** 2 + 1) * out
  np.testing.assert_allclose(x0_hat, want_x0, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(pre.scale_input(jnp.asarray(x)), x / np.sqrt(s ** 2 + 1), rtol=1e-6)
  np.testing.assert_allclose(pre.timestep, 0.25 * np.log(sigma), rtol=1e-6)
  w = 1 + np.random.default_rng(2).uniform(size=x0.shape[:-1] + (1,)).astype(np.float32)
  got = losses.edm_denoising_loss(jnp.asarray(x0_hat), x0, sigma, weight=w)
  want = np.mean((s ** 2 + 1) / s ** 2 * (x0_hat - x0) ** 2 * w)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  plain = losses.edm_denoising_loss(jnp.asarray(x0_hat), x0, sigma)
  np.testing.assert_allclose(plain, np.mean((s ** 2 + 1) / s ** 2 * (x0_hat - x0) ** 2), rtol=1e-5)
  # sigma_data 0.5 changes both the weight and the preconditioning.
  lam = losses.edm_loss_weight(sigma, 0.5)
  np.testing.assert_allclose(lam, (sigma ** 2 + 0.25) / (0.25 * sigma ** 2), rtol=1e-6)


def test_edm_loss_equals_stableanimator_torch_computation():
  """The porting notes' StableAnimator training loss, written in torch: noisy = x0 + s eps; EDM
  preconditioning with sigma_data 1; loss = mean((1 + s^2) / s^2 (D - x0)^2 (1 + M)), M the face
  mask nearest-downsampled to latent size."""
  import torch
  x0, eps, out, sigma, mask = _edm_batch()
  t = lambda a: torch.from_numpy(a)
  s = t(sigma).reshape(-1, 1, 1, 1, 1)
  noisy = t(x0) + s * t(eps)
  c_skip, c_out = 1 / (s ** 2 + 1), -s / (s ** 2 + 1) ** 0.5
  denoised = c_skip * noisy + c_out * t(out)
  m = torch.nn.functional.interpolate(t(mask), size=x0.shape[2:4], mode="nearest")   # (B, F, h, w)
  want = torch.mean((1 + s ** 2) / s ** 2 * (denoised - t(x0)) ** 2 * (1 + m[..., None])).item()

  pre = parameterization.edm_training_preconditioning(sigma, x0.ndim)
  x0_hat = pre.to_x0(jnp.asarray(x0) + jnp.asarray(sigma)[:, None, None, None, None] * eps,
                     jnp.asarray(out))
  weight = 1 + m.numpy()[..., None]
  got = float(losses.edm_denoising_loss(x0_hat, x0, sigma, weight=weight))
  np.testing.assert_allclose(got, want, rtol=1e-5)
  assert abs(got - float(losses.edm_denoising_loss(x0_hat, x0, sigma))) > 1e-2 * got   # M matters
