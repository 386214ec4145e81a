"""The EDM Euler step and per-frame guidance against diffusers' EulerDiscreteScheduler configured as
Stable Video Diffusion's scheduler, driven as StableVideoDiffusionPipeline drives it."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import EulerDiscreteScheduler
from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import _append_dims

from sem_repa_jax.diffusion import guidance, parameterization, samplers

# stable-video-diffusion-img2vid-xt scheduler/scheduler_config.json
SVD_SCHEDULER = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                     clip_sample=False, interpolation_type="linear", num_train_timesteps=1000,
                     prediction_type="v_prediction", set_alpha_to_one=False, sigma_max=700.0,
                     sigma_min=0.002, skip_prk_steps=True, steps_offset=1,
                     timestep_spacing="leading", timestep_type="continuous", trained_betas=None,
                     use_karras_sigmas=True)
B, F, HW, C = 2, 5, 3, 4
rng = np.random.default_rng(0)
W = (rng.standard_normal((C, C)) * 0.5).astype(np.float32)
COND = rng.standard_normal((1, 1, 1, 1, C)).astype(np.float32)


def _svd_scheduler(steps):
  ref = EulerDiscreteScheduler.from_config(SVD_SCHEDULER)
  ref.set_timesteps(steps)
  return ref


def _toy_torch(x_in, t, cond):
  """A fixed linear map over channels, scaled by the timestep (channels-last (B, F, h, w, C))."""
  return (x_in @ torch.from_numpy(W)) * (1 + 0.1 * t) + cond


def _toy_jax(x_in, t, cond):
  return (x_in @ jnp.asarray(W)) * (1 + 0.1 * t) + cond


def _noise():
  return np.random.default_rng(1).standard_normal((B, F, HW, HW, C)).astype(np.float32)


# Not 1 or 2 steps: a step from sigma 700 to (nearly) 0 cancels x ~ 700 against itself, which leaves
# ~1e-4 of float32 rounding in either implementation.
@pytest.mark.parametrize("steps", [3, 4, 7, 25])   # 25: SVD's default
def test_euler_loop_matches_svd_scheduler(steps):
  ref = _svd_scheduler(steps)
  plan = samplers.make_plan("euler", None, steps)
  np.testing.assert_allclose(plan.timesteps.astype(np.float32), ref.timesteps.numpy(), rtol=1e-6)
  assert np.float32(plan.init_noise_sigma) == pytest.approx(float(ref.init_noise_sigma), rel=1e-7)
  x = torch.from_numpy(_noise()) * ref.init_noise_sigma
  for t in ref.timesteps:
    out = ref.step(_toy_torch(ref.scale_model_input(x, t), t, 0.0), t, x)
    x = out.prev_sample
  network = lambda x_in, t, g: _toy_jax(x_in, t, 0.0)
  ours, x0 = jax.jit(lambda x: samplers.sample_loop(parameterization.x0_denoiser(network), x,
                                                    plan.arrays(), method="euler"))(
      jnp.asarray(_noise()) * np.float32(plan.init_noise_sigma))
  np.testing.assert_allclose(ours, x.numpy(), rtol=1e-5, atol=1e-5)
  # The last step goes to sigma 0: the sample is that step's x0.
  np.testing.assert_allclose(x0, out.pred_original_sample.numpy(), rtol=1e-5, atol=1e-5)


def test_per_frame_guidance_matches_the_svd_pipeline():
  steps, lo, hi = 4, 1.0, 3.0
  ref = _svd_scheduler(steps)
  latents = torch.from_numpy(_noise()) * ref.init_noise_sigma
  # StableVideoDiffusionPipeline.__call__, step 8 and the denoising loop (frames on axis 1 there too).
  g_ref = torch.linspace(lo, hi, F).unsqueeze(0).to(latents.dtype).repeat(B, 1)
  g_ref = _append_dims(g_ref, latents.ndim)
  table = guidance.every_step(guidance.frame_guidance_scales(F, lo, hi), steps)
  assert table.shape == (steps, F)
  np.testing.assert_allclose(table[0].astype(np.float32), g_ref[0, :, 0, 0, 0].numpy(), rtol=1e-7)
  for t in ref.timesteps:
    x_in = ref.scale_model_input(torch.cat([latents] * 2), t)
    cond = torch.from_numpy(COND).expand(B, -1, -1, -1, -1)
    pred = _toy_torch(x_in, t, torch.cat([torch.zeros_like(cond), cond]))
    uncond, cond = pred.chunk(2)
    latents = ref.step(uncond + g_ref * (cond - uncond), t, latents).prev_sample

  plan = samplers.make_plan("euler", None, steps)
  both = jnp.concatenate([jnp.zeros((B,) + COND.shape[1:]), jnp.repeat(COND, B, axis=0)])

  def denoise(x, pre, g):
    x_in = pre.scale_input(jnp.concatenate([x, x]))
    uncond, cond = jnp.split(_toy_jax(x_in, pre.timestep, both), 2)
    return pre.to_x0(x, guidance.classifier_free_guidance(uncond, cond, g))

  ours, _ = jax.jit(lambda x: samplers.sample_loop(denoise, x, plan.arrays(), method="euler",
                                                   guidance_scales=table))(
      jnp.asarray(_noise()) * np.float32(plan.init_noise_sigma))
  np.testing.assert_allclose(ours, latents.numpy(), rtol=1e-5, atol=1e-5)
  # Frame 0 is guided with 1 (the conditional output alone), the last with 3: the table matters.
  flat, _ = jax.jit(lambda x: samplers.sample_loop(denoise, x, plan.arrays(), method="euler",
                                                   guidance_scales=np.full((steps,), hi)))(
      jnp.asarray(_noise()) * np.float32(plan.init_noise_sigma))
  np.testing.assert_allclose(flat[:, -1], ours[:, -1], rtol=1e-5, atol=1e-5)
  assert float(jnp.max(jnp.abs(flat[:, 0] - ours[:, 0]))) > 1e-2


def test_euler_plan_rejects_what_it_does_not_reproduce():
  with pytest.raises(ValueError, match="v_prediction"):
    samplers.make_plan("euler", None, 4, prediction_type="epsilon")
  with pytest.raises(ValueError, match="sigma_min"):
    samplers.make_plan("euler", None, 4, sigma_min=800.0)
  # 'linspace' / 'trailing' spacing start from sigma_max itself, as diffusers' init_noise_sigma.
  ref = EulerDiscreteScheduler.from_config({**SVD_SCHEDULER, "timestep_spacing": "trailing"})
  ref.set_timesteps(4)
  plan = samplers.make_plan("euler", None, 4, timestep_spacing="trailing")
  assert plan.init_noise_sigma == pytest.approx(float(ref.init_noise_sigma)) == pytest.approx(700.0)
