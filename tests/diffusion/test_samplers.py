"""DDIM and DPM++(2M) SDE steps and the scanned loop against diffusers' CogVideoX schedulers."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import CogVideoXDDIMScheduler, CogVideoXDPMScheduler

from sem_repa_jax.diffusion import guidance, samplers, schedules

SHAPE = (1, 3, 4, 4, 2)


def _reference(cls, snr_shift_scale):
  return cls(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
             num_train_timesteps=1000, prediction_type="v_prediction", rescale_betas_zero_snr=True,
             set_alpha_to_one=True, steps_offset=0, timestep_spacing="trailing",
             snr_shift_scale=snr_shift_scale)


def _fake_v_np(x, t):
  """A smooth stand-in for the transformer, so each step's input depends on the previous step."""
  return np.tanh(x) * (t / 1000.0) + 0.1 * np.cos(x)


def _fake_v_jax(x, t, g=None):
  return jnp.tanh(x) * (t / 1000.0) + 0.1 * jnp.cos(x)


@pytest.mark.parametrize("snr_shift_scale,steps", [(1.0, 5), (3.0, 50), (1.0, 3)])
def test_ddim_steps_match_diffusers(snr_shift_scale, steps):
  ref = _reference(CogVideoXDDIMScheduler, snr_shift_scale)
  ref.set_timesteps(steps)
  plan = samplers.make_plan("ddim", schedules.cogvideox_alphas_cumprod(snr_shift_scale), steps)
  np.testing.assert_array_equal(plan.timesteps, ref.timesteps.numpy())
  x = np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32)
  xt, xj = torch.from_numpy(x), jnp.asarray(x)
  for i, t in enumerate(ref.timesteps):
    v = _fake_v_np(xt.numpy(), int(t)).astype(np.float32)
    xt, x0t = ref.step(torch.from_numpy(v), t, xt, return_dict=False)
    # Same input each step: the error is that of one step, not accumulated.
    prev, x0 = samplers.ddim_step(jnp.asarray(plan.coefficients[i], jnp.float32), jnp.asarray(v),
                                  jnp.asarray(xj))
    np.testing.assert_allclose(prev, xt.numpy(), rtol=0, atol=2e-6)
    np.testing.assert_allclose(x0, x0t.numpy(), rtol=0, atol=2e-6)
    xj = xt.numpy()
  # The scanned loop runs the same chain end to end.
  ts, cs = plan.arrays()
  out, _ = jax.jit(lambda x: samplers.sample_loop(_fake_v_jax, x, ts, cs, method="ddim"))(x)
  np.testing.assert_allclose(out, xt.numpy(), rtol=0, atol=1e-5)


@pytest.mark.parametrize("prediction_type", ["sample", "epsilon"])
def test_other_prediction_types_read_as_v_match_diffusers(prediction_type):
  """A model output read as x0 or eps, converted to v (schedules.prediction_to_v), steps as
  diffusers' scheduler configured with that prediction_type steps the raw output."""
  ref = _reference(CogVideoXDDIMScheduler, 1.0)
  ref.register_to_config(prediction_type=prediction_type)
  ref.set_timesteps(5)
  ab = schedules.cogvideox_alphas_cumprod(1.0)
  plan = samplers.make_plan("ddim", ab, 5)
  x = np.random.default_rng(1).standard_normal(SHAPE).astype(np.float32)
  for i, t in enumerate(ref.timesteps):
    if prediction_type == "epsilon" and ab[int(t)] == 0:
      continue    # zero terminal SNR: eps does not determine x0 at t = 999 (nor in diffusers)
    out = _fake_v_np(x, int(t)).astype(np.float32)
    prev_ref, x0_ref = ref.step(torch.from_numpy(out), t, torch.from_numpy(x), return_dict=False)
    v = schedules.prediction_to_v(ab.astype(np.float32), jnp.asarray(x), jnp.asarray(out),
                                  jnp.full((1,), int(t)), prediction_type)
    prev, x0 = samplers.ddim_step(jnp.asarray(plan.coefficients[i], jnp.float32), v, jnp.asarray(x))
    np.testing.assert_allclose(prev, prev_ref.numpy(), rtol=0, atol=5e-6)
    np.testing.assert_allclose(x0, x0_ref.numpy(), rtol=0, atol=5e-6)
    x = prev_ref.numpy()
  with pytest.raises(ValueError, match="expected one of"):
    schedules.prediction_to_v(ab, jnp.asarray(x), jnp.asarray(x), jnp.zeros((1,), jnp.int32), "x0")


@pytest.mark.parametrize("snr_shift_scale,steps", [(1.0, 5), (3.0, 5), (1.0, 50)])
def test_dpm_steps_match_diffusers_with_the_same_noise(snr_shift_scale, steps):
  ref = _reference(CogVideoXDPMScheduler, snr_shift_scale)
  ref.set_timesteps(steps)
  plan = samplers.make_plan("dpm", schedules.cogvideox_alphas_cumprod(snr_shift_scale), steps)
  x = np.random.default_rng(1).standard_normal(SHAPE).astype(np.float32)
  gen, replay = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
  xt, old = torch.from_numpy(x), None
  old_j = jnp.zeros(SHAPE, jnp.float32)
  ts = ref.timesteps
  for i, t in enumerate(ts):
    v = _fake_v_np(xt.numpy(), int(t)).astype(np.float32)
    x_in = xt.numpy()
    xt, old = ref.step(torch.from_numpy(v), old, t, ts[i - 1] if i > 0 else None, xt,
                       generator=gen, return_dict=False)
    # diffusers draws one noise per step and a second one (the one it uses) on second-order steps.
    noise = torch.randn(SHAPE, generator=replay)
    second_order = i > 0 and int(t) - 1000 // steps >= 0
    if second_order:
      noise = torch.randn(SHAPE, generator=replay)
    if not second_order:  # first-order steps ignore the previous x0
      assert tuple(plan.coefficients[i, 4:6]) == (1.0, 0.0)
    prev, x0 = samplers.dpm_step(jnp.asarray(plan.coefficients[i], jnp.float32), jnp.asarray(v),
                                 jnp.asarray(x_in), old_j, jnp.asarray(noise.numpy()))
    np.testing.assert_allclose(prev, xt.numpy(), rtol=0, atol=5e-6)
    np.testing.assert_allclose(x0, old.numpy(), rtol=0, atol=5e-6)
    old_j = jnp.asarray(old.numpy())


def test_dpm_loop_is_the_chain_of_steps_with_key_noise():
  plan = samplers.make_plan("dpm", schedules.cogvideox_alphas_cumprod(1.0), 5)
  ts, cs = plan.arrays()
  x = jnp.asarray(np.random.default_rng(2).standard_normal(SHAPE), jnp.float32)
  key = jax.random.key(3)
  out, _ = jax.jit(lambda x, k: samplers.sample_loop(_fake_v_jax, x, ts, cs, method="dpm", key=k))(x, key)
  xm, old = x, jnp.zeros_like(x)
  for i in range(5):
    key, sub = jax.random.split(key)
    xm, old = samplers.dpm_step(jnp.asarray(plan.coefficients[i], jnp.float32),
                                _fake_v_jax(xm, plan.timesteps[i]), xm, old,
                                jax.random.normal(sub, SHAPE, jnp.float32))
  np.testing.assert_allclose(out, xm, rtol=0, atol=1e-5)


def test_guidance_scales_follow_the_pipeline_formula():
  import math
  t = schedules.inference_timesteps(50)
  np.testing.assert_array_equal(guidance.guidance_scales(t, 6.0), np.full(50, 6.0))
  dyn = guidance.guidance_scales(t, 6.0, use_dynamic_cfg=True)
  # Written out from pipeline_cogvideox_image2video.py for two steps.
  for i in (0, 49):
    ti = int(t[i])
    assert dyn[i] == 1 + 6.0 * ((1 - math.cos(math.pi * ((50 - ti) / 50) ** 5.0)) / 2)
  u, c = jnp.ones((2,)), jnp.full((2,), 3.0)
  np.testing.assert_allclose(guidance.classifier_free_guidance(u, c, 6.0), [13.0, 13.0])


def test_progress_bar_advances_from_compiled_loop():
  seen = []

  class Recorder(samplers.HostProgress):
    def update(self, step):
      seen.append(int(step))

  plan = samplers.make_plan("ddim", schedules.cogvideox_alphas_cumprod(1.0), 4)
  ts, cs = plan.arrays()
  out, _ = jax.jit(lambda x: samplers.sample_loop(_fake_v_jax, x, ts, cs, method="ddim",
                                                   progress=Recorder()))(jnp.ones(SHAPE))
  jax.block_until_ready(out)
  jax.effects_barrier()
  assert sorted(seen) == [0, 1, 2, 3]
