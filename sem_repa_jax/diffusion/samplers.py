"""CogVideoX samplers as pure steps and one scanned loop.

Two update rules, as diffusers' CogVideoX schedulers apply them to a v-prediction model:
- 'ddim': CogVideoXDDIMScheduler.step, deterministic (its eta is ignored by diffusers too):
  x0 = sqrt(ab_t) x - sqrt(1-ab_t) v;  x_prev = a x + b x0,
  a = sqrt((1-ab_prev)/(1-ab_t)), b = sqrt(ab_prev) - sqrt(ab_t) a.
- 'dpm': CogVideoXDPMScheduler.step, SDE DPM-Solver++(2M): first order on the first and last step,
  second order (x0 extrapolated with the previous step's x0) in between, fresh Gaussian noise
  every step.

Every per-step scalar (the timestep, the coefficients above) is computed once on the host in float64
from the alpha-bar table, exactly where diffusers computes them in float64 torch scalars, and cast to
the latent dtype where it multiplies a tensor, as torch does for 0-dim float64 tensors. The loop is
a `lax.scan` over these tables, so the whole sampling run is one compiled program.
"""
import dataclasses
import threading
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from sem_repa_jax.diffusion import schedules

METHODS = ("ddim", "dpm")


@dataclasses.dataclass(frozen=True)
class SamplerPlan:
  """Host-side tables for one sampling run: row i holds what step i needs.

  timesteps: (n,) int64, descending, what the model is called with.
  coefficients: (n, k) float64; DDIM columns (sqrt_ab, sqrt_1m_ab, a, b); DPM columns
    (sqrt_ab, sqrt_1m_ab, mult1, mult2, mult3, mult4, mult_noise).
  """
  method: str
  timesteps: np.ndarray
  coefficients: np.ndarray

  @property
  def num_steps(self) -> int:
    return len(self.timesteps)

  def arrays(self):
    """(timesteps int32, coefficients float64 numpy) to pass into a jitted function."""
    return jnp.asarray(self.timesteps, jnp.int32), np.asarray(self.coefficients)


def _prev_alpha_bar(alphas_cumprod, timesteps, num_train_timesteps, final_alpha_cumprod):
  # diffusers steps to t - T // n, not to the next entry of `timesteps` (they differ when n does
  # not divide T); below 0 it uses the final alpha-bar (1 with set_alpha_to_one).
  n = len(timesteps)
  prev_t = timesteps - num_train_timesteps // n
  ab_prev = np.where(prev_t >= 0, alphas_cumprod[np.maximum(prev_t, 0)], final_alpha_cumprod)
  return prev_t, ab_prev


def make_plan(method: str, alphas_cumprod: np.ndarray, num_inference_steps: int, *,
              timestep_spacing: str = "trailing", num_train_timesteps: Optional[int] = None,
              steps_offset: int = 0, set_alpha_to_one: bool = True) -> SamplerPlan:
  """The tables of `method` for a CogVideoX scheduler with these settings (defaults: the released
  CogVideoX scheduler configs, trailing spacing, alpha-bar 1 after the last step)."""
  if method not in METHODS:
    raise ValueError(f"sampler {method!r}: expected one of {METHODS}")
  ab = np.asarray(alphas_cumprod, np.float64)
  T = len(ab) if num_train_timesteps is None else int(num_train_timesteps)
  t = schedules.inference_timesteps(num_inference_steps, timestep_spacing,
                                    num_train_timesteps=T, steps_offset=steps_offset)
  final = 1.0 if set_alpha_to_one else ab[0]
  prev_t, ab_prev = _prev_alpha_bar(ab, t, T, final)
  ab_t = ab[t]
  sqrt_ab, sqrt_1m = ab_t ** 0.5, (1 - ab_t) ** 0.5
  with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
    if method == "ddim":
      a = ((1 - ab_prev) / (1 - ab_t)) ** 0.5
      b = ab_prev ** 0.5 - ab_t ** 0.5 * a
      coeffs = np.stack([sqrt_ab, sqrt_1m, a, b], axis=1)
    else:
      # log-SNR lambda = log sqrt(ab / (1 - ab)); -inf at zero terminal SNR and +inf at ab_prev = 1
      # give the limits diffusers gets from the same float64 arithmetic (mult1 0, mult2 -sqrt(ab')).
      lamb = np.log((ab_t / (1 - ab_t)) ** 0.5)
      lamb_next = np.log((ab_prev / (1 - ab_prev)) ** 0.5)
      h = lamb_next - lamb
      mult1 = ((1 - ab_prev) / (1 - ab_t)) ** 0.5 * np.exp(-h)
      mult2 = np.expm1(-2 * h) * ab_prev ** 0.5
      mult_noise = (1 - ab_prev) ** 0.5 * (1 - np.exp(-2 * h)) ** 0.5
      # Second order needs the previous x0 and is skipped on the last step; (1, 0) makes the
      # shared update below reduce exactly to the first-order one.
      mult3, mult4 = np.ones_like(h), np.zeros_like(h)
      for i in range(1, len(t)):
        if prev_t[i] < 0:
          continue
        h_last = lamb[i] - lamb[i - 1]
        r = h_last / h[i]
        mult3[i], mult4[i] = 1 + 1 / (2 * r), 1 / (2 * r)
      coeffs = np.stack([sqrt_ab, sqrt_1m, mult1, mult2, mult3, mult4, mult_noise], axis=1)
  if not np.all(np.isfinite(coeffs)):
    raise ValueError(f"{method} plan for {num_inference_steps} steps has non-finite coefficients; "
                     "is alphas_cumprod in (0, 1] except possibly a zero last entry?")
  return SamplerPlan(method, t, coeffs)


def ddim_step(coefficients, v, x):
  """One CogVideoX DDIM step of a v-prediction; returns (x_prev, x0)."""
  c = coefficients.astype(x.dtype)
  x0 = c[0] * x - c[1] * v
  return c[2] * x + c[3] * x0, x0


def dpm_step(coefficients, v, x, old_x0, noise):
  """One CogVideoX SDE DPM++(2M) step; old_x0 is the previous step's x0 (ignored on the first and
  last step through the plan's coefficients); returns (x_prev, x0)."""
  c = coefficients.astype(x.dtype)
  x0 = c[0] * x - c[1] * v
  denoised = c[4] * x0 - c[5] * old_x0
  return c[2] * x - c[3] * denoised + c[6] * noise, x0


class HostProgress:
  """A tqdm bar on the host, advanced from inside compiled code by `jax.debug.callback`.

  Callbacks are unordered (ordered effects do not mix with multi-device programs), so `update`
  takes the step index and only moves the bar forward.
  """

  def __init__(self, desc: str = "sampling", enabled: bool = True):
    self.desc, self.enabled = desc, enabled
    self._bar, self._lock = None, threading.Lock()

  def start(self, total: int):
    if self.enabled:
      from tqdm.auto import tqdm
      self.close()
      self._bar = tqdm(total=total, desc=self.desc, unit="step")

  def update(self, step):
    with self._lock:
      if self._bar is not None:
        done = int(step) + 1
        if done > self._bar.n:
          self._bar.update(done - self._bar.n)

  def close(self):
    with self._lock:
      if self._bar is not None:
        self._bar.close()
        self._bar = None


DenoiseFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


def sample_loop(denoise: DenoiseFn, x, timesteps, coefficients, *, method: str,
                guidance_scales=None, key=None, progress: Optional[HostProgress] = None):
  """Runs every step of a plan in one lax.scan; traceable (call it inside jit).

  denoise(x, t, guidance_scale) -> model output (v) for latents x at integer timestep t (a scalar);
    guidance_scale is that step's entry of `guidance_scales` (zeros if None).
  timesteps, coefficients: `SamplerPlan.arrays()`; method: the plan's method.
  key: PRNG key for the DPM noise (unused by DDIM).
  Returns (x_0 sample, last x0 prediction).
  """
  if method not in METHODS:
    raise ValueError(f"sampler {method!r}: expected one of {METHODS}")
  if method == "dpm" and key is None:
    raise ValueError("the 'dpm' sampler draws noise every step: pass key=")
  n = timesteps.shape[0]
  scales = jnp.zeros((n,), jnp.float32) if guidance_scales is None else jnp.asarray(guidance_scales)
  coefficients = jnp.asarray(coefficients)
  key = jax.random.key(0) if key is None else key

  def body(carry, xs):
    x, old_x0, key = carry
    i, t, c, g = xs
    v = denoise(x, t, g).astype(x.dtype)
    if method == "ddim":
      x, x0 = ddim_step(c, v, x)
    else:
      key, sub = jax.random.split(key)
      x, x0 = dpm_step(c, v, x, old_x0, jax.random.normal(sub, x.shape, x.dtype))
    if progress is not None:
      jax.debug.callback(progress.update, i)
    return (x, x0, key), None

  xs = (jnp.arange(n), timesteps, coefficients, scales)
  (x, x0, _), _ = jax.lax.scan(body, (x, jnp.zeros_like(x), key), xs)
  return x, x0
