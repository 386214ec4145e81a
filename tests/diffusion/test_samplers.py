"""DDIM and DPM++(2M) SDE steps and the scanned loop against diffusers' CogVideoX schedulers."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import CogVideoXDDIMScheduler, CogVideoXDPMScheduler

from sem_repa_jax.diffusion import guidance, parameterization, samplers, schedules
from sem_repa_jax.diffusion import steps as step_rules

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


_fake_x0_jax = parameterization.x0_denoiser(_fake_v_jax)


def _pre(plan, i):
  """Step i's parameterization, as the loop hands it to the model side."""
  return parameterization.Preconditioning(plan.timesteps[i],
                                          *jnp.asarray(plan.preconditioning[i], jnp.float32))


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
    x0 = _pre(plan, i).to_x0(jnp.asarray(xj), jnp.asarray(v))
    c = jnp.asarray(plan.coefficients[i], jnp.float32)
    prev, _ = step_rules.ddim_update(c, jnp.asarray(xj), x0, (), None)
    np.testing.assert_allclose(prev, xt.numpy(), rtol=0, atol=2e-6)
    np.testing.assert_allclose(x0, x0t.numpy(), rtol=0, atol=2e-6)
    xj = xt.numpy()
  # The scanned loop runs the same chain end to end.
  tables = plan.arrays()
  out, _ = jax.jit(lambda x: samplers.sample_loop(_fake_x0_jax, x, tables, method="ddim"))(x)
  np.testing.assert_allclose(out, xt.numpy(), rtol=0, atol=1e-5)


@pytest.mark.parametrize("prediction_type", ["sample", "epsilon"])
def test_other_prediction_types_read_as_v_match_diffusers(prediction_type):
  """A model output read as x0 or eps, converted to v (parameterization.prediction_to_v), steps as
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
    v = parameterization.prediction_to_v(ab.astype(np.float32), jnp.asarray(x), jnp.asarray(out),
                                         jnp.full((1,), int(t)), prediction_type)
    x0 = _pre(plan, i).to_x0(jnp.asarray(x), v)
    c = jnp.asarray(plan.coefficients[i], jnp.float32)
    prev, _ = step_rules.ddim_update(c, jnp.asarray(x), x0, (), None)
    np.testing.assert_allclose(prev, prev_ref.numpy(), rtol=0, atol=5e-6)
    np.testing.assert_allclose(x0, x0_ref.numpy(), rtol=0, atol=5e-6)
    x = prev_ref.numpy()
  with pytest.raises(ValueError, match="expected one of"):
    parameterization.prediction_to_v(ab, jnp.asarray(x), jnp.asarray(x), jnp.zeros((1,), jnp.int32),
                                     "x0")


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
      assert tuple(plan.coefficients[i, 2:4]) == (1.0, 0.0)   # columns mult3, mult4
    x0 = _pre(plan, i).to_x0(jnp.asarray(x_in), jnp.asarray(v))
    c = jnp.asarray(plan.coefficients[i], jnp.float32)
    prev, _ = step_rules.dpm_update(c, jnp.asarray(x_in), x0, old_j, jnp.asarray(noise.numpy()))
    np.testing.assert_allclose(prev, xt.numpy(), rtol=0, atol=5e-6)
    np.testing.assert_allclose(x0, old.numpy(), rtol=0, atol=5e-6)
    old_j = jnp.asarray(old.numpy())


def test_dpm_loop_is_the_chain_of_steps_with_key_noise():
  plan = samplers.make_plan("dpm", schedules.cogvideox_alphas_cumprod(1.0), 5)
  tables = plan.arrays()
  x = jnp.asarray(np.random.default_rng(2).standard_normal(SHAPE), jnp.float32)
  key = jax.random.key(3)
  out, _ = jax.jit(lambda x, k: samplers.sample_loop(_fake_x0_jax, x, tables, method="dpm",
                                                     key=k))(x, key)
  xm, old = x, jnp.zeros_like(x)
  for i in range(5):
    key, sub = jax.random.split(key)
    x0 = _pre(plan, i).to_x0(xm, _fake_v_jax(xm, plan.timesteps[i]))
    xm, old = step_rules.dpm_update(jnp.asarray(plan.coefficients[i], jnp.float32), xm, x0, old,
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
  tables = plan.arrays()
  out, _ = jax.jit(lambda x: samplers.sample_loop(_fake_x0_jax, x, tables, method="ddim",
                                                   progress=Recorder()))(jnp.ones(SHAPE))
  jax.block_until_ready(out)
  jax.effects_barrier()
  assert sorted(seen) == [0, 1, 2, 3]


def test_progress_bar_appears_with_the_first_step_not_before_compilation(monkeypatch):
  """The bar is created when the first step reports, so compile time is not in its rate/ETA."""
  import tqdm.auto
  created = []

  class Bar:
    def __init__(self, total, desc, unit):
      created.append(total)
      self.n = 0

    def update(self, k):
      self.n += k

    def close(self):
      pass

  monkeypatch.setattr(tqdm.auto, "tqdm", Bar)
  progress = samplers.HostProgress("sample")
  progress.start(4)
  assert created == []                  # nothing yet: the program is still compiling
  progress.update(0)
  progress.update(2)
  assert created == [4] and progress._bar.n == 3
  progress.close()
  progress.update(3)                    # a late callback after close draws nothing
  assert created == [4]


@pytest.mark.parametrize("prediction_type", ["sample", "epsilon"])
def test_plan_reads_other_prediction_types_as_x0_like_diffusers(prediction_type):
  """The plan's preconditioning turns an x0 or eps output into x0 directly (no detour through v)."""
  ref = _reference(CogVideoXDDIMScheduler, 1.0)
  # eps needs alpha-bar > 0 at every step: the table without the zero-terminal-SNR rescale.
  ref.register_to_config(prediction_type=prediction_type, rescale_betas_zero_snr=False)
  ref = CogVideoXDDIMScheduler.from_config(ref.config)
  ref.set_timesteps(5)
  ab = schedules.cogvideox_alphas_cumprod(1.0, rescale_zero_snr=False)
  plan = samplers.make_plan("ddim", ab, 5, prediction_type=prediction_type)
  x = np.random.default_rng(1).standard_normal(SHAPE).astype(np.float32)
  for i, t in enumerate(ref.timesteps):
    out = _fake_v_np(x, int(t)).astype(np.float32)
    prev_ref, x0_ref = ref.step(torch.from_numpy(out), t, torch.from_numpy(x), return_dict=False)
    x0 = _pre(plan, i).to_x0(jnp.asarray(x), jnp.asarray(out))
    prev, _ = step_rules.ddim_update(jnp.asarray(plan.coefficients[i], jnp.float32), jnp.asarray(x),
                                     x0, (), None)
    np.testing.assert_allclose(x0, x0_ref.numpy(), rtol=1e-5, atol=5e-6)
    np.testing.assert_allclose(prev, prev_ref.numpy(), rtol=1e-5, atol=5e-6)
    x = prev_ref.numpy()
  # At zero terminal SNR eps does not determine x0 at t = 999: the plan says so instead of NaNs.
  with pytest.raises(ValueError, match="does not determine x0 at timestep 999"):
    samplers.make_plan("ddim", schedules.cogvideox_alphas_cumprod(1.0), 5, prediction_type="epsilon")


def _run(method, refine_x0=None, refine_key=None, key=None):
  plan = samplers.make_plan(method, schedules.cogvideox_alphas_cumprod(1.0), 5)
  x = jnp.asarray(np.random.default_rng(4).standard_normal(SHAPE), jnp.float32)
  return jax.jit(lambda x: samplers.sample_loop(_fake_x0_jax, x, plan.arrays(), method=method,
                                                key=key, refine_x0=refine_x0,
                                                refine_key=refine_key))(x)


@pytest.mark.parametrize("method", ["ddim", "dpm"])
def test_refine_x0_hook_sits_between_prediction_and_update(method):
  key = jax.random.key(5)
  plain, _ = _run(method, key=key)
  same, _ = _run(method, refine_x0=lambda x0, i, k: x0, refine_key=jax.random.key(1), key=key)
  # An identity hook changes nothing, the step noise included (the hook has its own stream).
  np.testing.assert_array_equal(same, plain)
  seen = []

  def shrink_late(x0, i, k):
    seen.append(k)
    return jnp.where(i >= 3, 0.5 * x0, x0)

  refined, last_x0 = _run(method, refine_x0=shrink_late, key=key)
  assert seen == [None]   # traced once in the scan body; no refine_key -> no key
  assert float(jnp.max(jnp.abs(refined - plain))) > 1e-3
  # The same chain by hand: the update consumes the refined x0.
  plan = samplers.make_plan(method, schedules.cogvideox_alphas_cumprod(1.0), 5)
  x = jnp.asarray(np.random.default_rng(4).standard_normal(SHAPE), jnp.float32)
  step, state = step_rules.get_step(method), jnp.zeros_like(x) if method == "dpm" else ()
  for i in range(5):
    x0 = _fake_x0_jax(x, _pre(plan, i), 0.0)
    x0 = 0.5 * x0 if i >= 3 else x0
    noise = None
    if step.stochastic:
      key, sub = jax.random.split(key)
      noise = jax.random.normal(sub, SHAPE, jnp.float32)
    x, state = step.update(jnp.asarray(plan.coefficients[i], jnp.float32), x, x0, state, noise)
  np.testing.assert_allclose(refined, x, rtol=0, atol=1e-5)
  np.testing.assert_allclose(last_x0, x0, rtol=0, atol=1e-5)


def test_refine_x0_key_is_per_step_and_apart_from_the_step_noise():
  def jitter(x0, i, k):
    return x0 + 0.01 * jax.random.normal(k, x0.shape, x0.dtype)

  a, _ = _run("ddim", refine_x0=jitter, refine_key=jax.random.key(1))
  b, _ = _run("ddim", refine_x0=jitter, refine_key=jax.random.key(1))
  c, _ = _run("ddim", refine_x0=jitter, refine_key=jax.random.key(2))
  np.testing.assert_array_equal(a, b)
  assert float(jnp.max(jnp.abs(a - c))) > 1e-4
