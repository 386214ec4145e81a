"""The step registry: names, errors, and a method added by registering it (the loop untouched)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sem_repa_jax.diffusion import parameterization, samplers, schedules, steps
from sem_repa_jax.pipelines import cogvideox_i2v as i2v


def test_unknown_names_are_rejected_with_the_known_ones():
  assert steps.step_names() == ("ddim", "dpm", "euler")
  assert steps.step_names("edm") == ("euler",)
  plan = samplers.make_plan("ddim", schedules.cogvideox_alphas_cumprod(1.0), 2)
  calls = [lambda: steps.get_step("heun"),
           lambda: samplers.make_plan("heun", schedules.cogvideox_alphas_cumprod(1.0), 2),
           lambda: samplers.sample_loop(None, jnp.zeros((1,)), plan.arrays(), method="heun")]
  for call in calls:
    with pytest.raises(ValueError) as info:
      call()
    assert str(info.value) == "sampler 'heun': expected one of ddim, dpm, euler"
  with pytest.raises(ValueError, match="already registered"):
    steps.register_step(steps.get_step("ddim"))
  with pytest.raises(ValueError, match="family"):
    steps.register_step(steps.Step("x", "flow", None, None, columns=()))
  # CogVideoX samples its discrete schedule only.
  facts = i2v.ModelFacts(latent_channels=4)
  with pytest.raises(ValueError, match="expected one of ddim, dpm$"):
    i2v.SamplingSettings(height=32, width=48, num_frames=9, sampler="euler").check(facts)


def test_a_registered_step_runs_in_the_loop():
  """'jump' goes straight to the x0 prediction each step (a one-line update, a ddim-like plan)."""
  def jump_plan(alphas_cumprod, n, **options):
    base = steps.ddim_plan(alphas_cumprod, n, **options)
    return steps.SamplerPlan("jump", base.timesteps, base.preconditioning, np.ones((n, 1)))

  def jump_update(c, x, x0, state, noise):
    return c[0].astype(x.dtype) * x0, state

  steps.register_step(steps.Step("jump", "discrete", jump_plan, jump_update, columns=("gain",)))
  try:
    assert "jump" in steps.step_names("discrete")
    plan = samplers.make_plan("jump", schedules.cogvideox_alphas_cumprod(1.0), 3)
    network = lambda x_in, t, g: jnp.sin(x_in) * (t / 1000.0)
    x = jnp.linspace(-1, 1, 8)
    out, _ = jax.jit(lambda x: samplers.sample_loop(parameterization.x0_denoiser(network), x,
                                                    plan.arrays(), method="jump"))(x)
    expected = x
    for i in range(3):
      pre = parameterization.Preconditioning(plan.timesteps[i], *plan.preconditioning[i])
      expected = pre.to_x0(expected, network(expected, plan.timesteps[i], None))
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-6)
  finally:
    del steps.STEPS["jump"]
