"""The sampling loop: one `lax.scan` over a plan's host tables, any registered step rule.

Each step i:
  x0 = denoise(x, Preconditioning row i, guidance row i)   the model side, returning x0
  x0 = refine_x0(x0, i, key_i)                             a hook (identity by default), e.g.
                                                           StableAnimator's HJB face optimization
  x, state = step.update(coefficients row i, x, x0, state, noise)
x0 is the common currency: whatever the network predicts (v, eps, x0, an EDM-preconditioned F),
the model side converts it (parameterization.Preconditioning.to_x0), so the step rules, the hooks
and guidance never depend on the parameterization. The whole run is one compiled program; a host
progress bar follows it through an unordered callback.
"""
import threading
from typing import Callable, Optional

import jax
import jax.numpy as jnp

from sem_repa_jax.diffusion import guidance
from sem_repa_jax.diffusion.parameterization import Preconditioning
from sem_repa_jax.diffusion.steps import PlanArrays, SamplerPlan, get_step, step_names  # noqa: F401


def make_plan(method: str, alphas_cumprod, num_inference_steps: int, **options) -> SamplerPlan:
  """The host tables of registered step `method` (steps.STEPS) for `num_inference_steps` steps of
  the training schedule `alphas_cumprod` (None for EDM steps); options go to the step's builder
  (discrete: timestep_spacing, num_train_timesteps, steps_offset, set_alpha_to_one,
  prediction_type; euler: sigma_min, sigma_max, rho, sigma_data, timestep_spacing)."""
  return get_step(method).build(alphas_cumprod, num_inference_steps, **options)


class HostProgress:
  """A tqdm bar on the host, advanced from inside compiled code by `jax.debug.callback`.

  Callbacks are unordered (ordered effects do not mix with multi-device programs), so `update`
  takes the step index and only moves the bar forward. The bar appears with the first finished
  step, not at `start`: compilation happens in between, and its rate and ETA would count it.
  """

  def __init__(self, desc: str = "sampling", enabled: bool = True):
    self.desc, self.enabled = desc, enabled
    self._bar, self._total, self._lock = None, None, threading.Lock()

  def start(self, total: int):
    if self.enabled:
      self.close()
      self._total = total

  def update(self, step):
    with self._lock:
      if self._bar is None and self._total is not None:
        from tqdm.auto import tqdm
        self._bar = tqdm(total=self._total, desc=self.desc, unit="step")
      if self._bar is not None:
        done = int(step) + 1
        if done > self._bar.n:
          self._bar.update(done - self._bar.n)

  def close(self):
    with self._lock:
      if self._bar is not None:
        self._bar.close()
      self._bar, self._total = None, None

  def run(self, total: int, fn, *args, **kwargs):
    """fn(*args, **kwargs) (a compiled sampling program of `total` steps) under the bar: its
    result once ready, every step's callback delivered, the bar closed even on an error."""
    self.start(total)
    try:
      out = jax.block_until_ready(fn(*args, **kwargs))
      jax.effects_barrier()
    finally:
      self.close()
    return out


DenoiseFn = Callable[[jax.Array, Preconditioning, jax.Array], jax.Array]
RefineFn = Callable[[jax.Array, jax.Array, Optional[jax.Array]], jax.Array]


def sample_loop(denoise: DenoiseFn, x, tables: PlanArrays, *, method: str, guidance_scales=None,
                key=None, refine_x0: Optional[RefineFn] = None, refine_key=None,
                progress: Optional[HostProgress] = None):
  """Runs every step of a plan in one lax.scan; traceable (call it inside jit).

  denoise(x, pre, guidance_scale) -> x0 prediction for latents x, with pre the step's
    Preconditioning (pre.timestep for the network, pre.scale_input(x) its input,
    pre.to_x0(x, output) the conversion; parameterization.x0_denoiser wraps a plain network call)
    and guidance_scale that step's row of `guidance_scales` (zeros if None; (n,) or (n, F)).
  tables: `SamplerPlan.arrays()`; method: the plan's method. x: the initial noise, already
    multiplied by the plan's init_noise_sigma.
  key: PRNG key of the step noise (stochastic steps, e.g. 'dpm'; unused by deterministic ones).
  refine_x0(x0, step_index, key) -> x0, applied between the prediction and the update; its key is
    fold_in(refine_key, step_index), or None without refine_key (a stream apart from the step
    noise, so adding a hook never changes the sampler's noise).
  Returns (x_0 sample, last x0 prediction).
  """
  step = get_step(method)
  if step.stochastic and key is None:
    raise ValueError(f"the {method!r} sampler draws noise every step: pass key=")
  timesteps, preconditioning, coefficients = tables
  n = timesteps.shape[0]
  scales = guidance.step_table(guidance_scales, n)
  key = jax.random.key(0) if key is None else key

  def body(carry, xs):
    x, state, _, key = carry
    i, t, p, c, g = xs
    x0 = denoise(x, Preconditioning(t, p[0], p[1], p[2]), g).astype(x.dtype)
    if refine_x0 is not None:
      k = None if refine_key is None else jax.random.fold_in(refine_key, i)
      x0 = refine_x0(x0, i, k).astype(x.dtype)
    noise = None
    if step.stochastic:
      key, sub = jax.random.split(key)
      noise = jax.random.normal(sub, x.shape, x.dtype)
    x, state = step.update(c, x, x0, state, noise)
    if progress is not None:
      jax.debug.callback(progress.update, i)
    return (x, state, x0, key), None

  xs = (jnp.arange(n), jnp.asarray(timesteps), jnp.asarray(preconditioning),
        jnp.asarray(coefficients), scales)
  init = (x, step.init_state(x), jnp.zeros_like(x), key)
  (x, _, x0, _), _ = jax.lax.scan(body, init, xs)
  return x, x0
