"""Schedules against diffusers' CogVideoX and Euler (SVD) schedulers."""
import math

import numpy as np
import pytest
import torch
from diffusers import CogVideoXDDIMScheduler, CogVideoXDPMScheduler, EulerDiscreteScheduler

from sem_repa_jax.diffusion import parameterization, schedules


def _cogvideox(cls, snr_shift_scale, spacing="trailing"):
  # The released CogVideoX scheduler configs (scheduler/scheduler_config.json).
  return cls(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
             num_train_timesteps=1000, prediction_type="v_prediction", rescale_betas_zero_snr=True,
             set_alpha_to_one=True, steps_offset=0, timestep_spacing=spacing,
             snr_shift_scale=snr_shift_scale)


@pytest.mark.parametrize("cls", [CogVideoXDDIMScheduler, CogVideoXDPMScheduler])
@pytest.mark.parametrize("snr_shift_scale", [1.0, 3.0])
def test_alphas_cumprod_and_timesteps_match_diffusers(cls, snr_shift_scale):
  ref = _cogvideox(cls, snr_shift_scale)
  ab = schedules.cogvideox_alphas_cumprod(snr_shift_scale)
  assert ab.dtype == np.float64 and ref.alphas_cumprod.dtype == torch.float64
  np.testing.assert_allclose(ab, ref.alphas_cumprod.numpy(), rtol=1e-13, atol=1e-15)
  assert ab[-1] == 0.0
  for n in (50, 5):
    ref.set_timesteps(n)
    np.testing.assert_array_equal(schedules.inference_timesteps(n, "trailing"), ref.timesteps.numpy())


@pytest.mark.parametrize("spacing", ["leading", "linspace", "trailing"])
def test_spacings_match_diffusers(spacing):
  ref = _cogvideox(CogVideoXDDIMScheduler, 1.0, spacing)
  for n in (1, 3, 7, 50, 999):
    ref.set_timesteps(n)
    np.testing.assert_array_equal(schedules.inference_timesteps(n, spacing), ref.timesteps.numpy())


def test_add_noise_velocity_and_conversions():
  ref = _cogvideox(CogVideoXDDIMScheduler, 3.0)
  ab = schedules.cogvideox_alphas_cumprod(3.0)
  rng = np.random.default_rng(0)
  x0 = rng.standard_normal((3, 2, 4, 4, 5)).astype(np.float32)
  eps = rng.standard_normal(x0.shape).astype(np.float32)
  t = np.array([0, 500, 999])
  tx0, teps, tt = torch.from_numpy(x0), torch.from_numpy(eps), torch.from_numpy(t)
  xt = np.asarray(schedules.add_noise(ab, x0, eps, t))
  v = np.asarray(parameterization.velocity(ab, x0, eps, t))
  np.testing.assert_allclose(xt, ref.add_noise(tx0, teps, tt).numpy(), rtol=0, atol=1e-6)
  np.testing.assert_allclose(v, ref.get_velocity(tx0, teps, tt).numpy(), rtol=0, atol=1e-6)
  np.testing.assert_allclose(parameterization.v_to_x0(ab, xt, v, t), x0, atol=2e-5)
  np.testing.assert_allclose(parameterization.v_to_eps(ab, xt, v, t), eps, atol=2e-5)
  inner = np.array([1, 500, 900])  # where both inverses are well conditioned
  xt_i = np.asarray(schedules.add_noise(ab, x0, eps, inner))
  v_i = np.asarray(parameterization.velocity(ab, x0, eps, inner))
  np.testing.assert_allclose(parameterization.x0_to_v(ab, xt_i, x0, inner), v_i, atol=1e-3)
  np.testing.assert_allclose(parameterization.eps_to_v(ab, xt_i, eps, inner), v_i, atol=1e-3)


def test_karras_sigmas_and_edm_preconditioning_match_svd_scheduler():
  # Stable Video Diffusion img2vid-xt scheduler_config.json.
  ref = EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                               interpolation_type="linear", num_train_timesteps=1000,
                               prediction_type="v_prediction", sigma_max=700.0, sigma_min=0.002,
                               steps_offset=1, timestep_spacing="leading", timestep_type="continuous",
                               use_karras_sigmas=True)
  ref.set_timesteps(25)
  sigmas = schedules.karras_sigmas(25)
  np.testing.assert_allclose(sigmas.astype(np.float32), ref.sigmas.numpy(), rtol=1e-6)
  assert sigmas[0] == pytest.approx(700.0) and sigmas[-2] == pytest.approx(0.002) and sigmas[-1] == 0
  c_skip, c_out, c_in, c_noise = parameterization.edm_v_preconditioning(sigmas[:-1])
  np.testing.assert_allclose(c_noise.astype(np.float32), ref.timesteps.numpy(), rtol=1e-6)
  rng = np.random.default_rng(1)
  x = rng.standard_normal((1, 4, 3, 3)).astype(np.float32)
  f = rng.standard_normal(x.shape).astype(np.float32)
  for i in (0, 12, 24):
    ref._step_index = i
    scaled = ref.scale_model_input(torch.from_numpy(x), ref.timesteps[i]).numpy()
    np.testing.assert_allclose(c_in[i] * x, scaled, rtol=1e-5)
    ref._step_index = i
    out = ref.step(torch.from_numpy(f), ref.timesteps[i], torch.from_numpy(x))
    np.testing.assert_allclose(c_skip[i] * x + c_out[i] * f, out.pred_original_sample.numpy(),
                               rtol=1e-5, atol=1e-6)


def test_shifted_cosine_sigmas():
  u = np.linspace(0, 1, 101)
  s = np.asarray(schedules.shifted_cosine_sigmas(u))
  np.testing.assert_allclose([s[0], s[-1]], [700.0, 0.002], rtol=1e-4)
  assert np.all(np.diff(s) < 0)
  # Without a resolution shift the density is the plain cosine schedule: sigma = sd * tan(angle).
  sd = 0.5
  a_max, a_min = math.atan(700 / sd), math.atan(0.002 / sd)
  plain = schedules.shifted_cosine_sigmas(u, noise_d_low=64, noise_d_high=64, image_d=64, sigma_data=sd)
  np.testing.assert_allclose(plain, sd * np.tan(a_max + u * (a_min - a_max)), rtol=1e-4)
  # Shifting to a lower noise resolution (32 < 64) lowers the log-SNR, i.e. raises sigma mid-way.
  assert s[50] > float(plain[50])


def test_training_sigmas_are_stratified():
  import jax
  sig = np.asarray(schedules.sample_training_sigmas(jax.random.key(0), 8))
  ref = np.asarray(schedules.shifted_cosine_sigmas((np.arange(9) / 8)))
  # One draw in each stratum: sigma_i between the sigmas of the stratum's edges.
  assert np.all(sig <= ref[:-1] * (1 + 1e-5)) and np.all(sig >= ref[1:] * (1 - 1e-5))


def test_lognormal_training_sigmas():
  import jax
  from scipy.stats import norm
  u = np.array([0.1, 0.5, 0.9])
  np.testing.assert_allclose(schedules.lognormal_sigmas(u), np.exp(-1.2 + 1.2 * norm.ppf(u)),
                             rtol=1e-5)
  np.testing.assert_allclose(schedules.lognormal_sigmas(u, p_mean=1.0, p_std=1.6),
                             np.exp(1.0 + 1.6 * norm.ppf(u)), rtol=1e-5)
  # Stratified: one draw per stratum of the normal's quantiles.
  sig = np.asarray(schedules.sample_training_sigmas(jax.random.key(0), 8, density="lognormal"))
  edges = np.exp(-1.2 + 1.2 * norm.ppf(np.clip(np.arange(9) / 8, 1e-7, 1 - 1e-7)))
  assert np.all(sig >= edges[:-1] * (1 - 1e-5)) and np.all(sig <= edges[1:] * (1 + 1e-5))
  many = np.log(np.asarray(schedules.sample_training_sigmas(
      jax.random.key(1), 20000, density="lognormal", stratified=False)))
  assert abs(many.mean() + 1.2) < 0.05 and abs(many.std() - 1.2) < 0.05
  # The default density is still StableAnimator's.
  np.testing.assert_array_equal(schedules.sample_training_sigmas(jax.random.key(0), 4),
                                schedules.sample_training_sigmas(jax.random.key(0), 4,
                                                                 density="cosine_interpolated"))
  with pytest.raises(ValueError, match="density 'uniform': expected one of cosine_interpolated, "
                                       "lognormal"):
    schedules.sample_training_sigmas(jax.random.key(0), 4, density="uniform")
