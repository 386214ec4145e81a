"""Step rules of the sampling loop, registered by name: a plan builder and a pure update from x0.

A `Step` pairs
- `build(alphas_cumprod, num_inference_steps, **options) -> SamplerPlan`: every per-step scalar
  (the network's timestep, its preconditioning, the update's coefficients) computed once on the
  host in float64, where diffusers computes them in float64 or float32 torch scalars;
- `update(c, x, x0, state, noise) -> (x_prev, state)`: one step from the noisy x and the (possibly
  refined) x0 prediction, c the plan's row cast to x's dtype where it multiplies a tensor.
Adding a method is `register_step(Step(...))`, not editing the loop (samplers.sample_loop).

Built in, as diffusers' schedulers step their models:
- 'ddim': CogVideoXDDIMScheduler.step, deterministic (its eta is ignored by diffusers too):
  x_prev = a x + b x0, a = sqrt((1-ab_prev)/(1-ab_t)), b = sqrt(ab_prev) - sqrt(ab_t) a.
- 'dpm': CogVideoXDPMScheduler.step, SDE DPM-Solver++(2M): first order on the first and last step,
  second order (x0 extrapolated with the previous step's x0) in between, fresh Gaussian noise
  every step.
- 'euler': EulerDiscreteScheduler.step as Stable Video Diffusion configures it (Karras sigmas,
  v-prediction EDM preconditioning, continuous timesteps c_noise, s_churn 0):
  x_prev = x + (x - x0) / s * (s_next - s).
"""
import dataclasses
from typing import Callable, NamedTuple, Optional

import jax.numpy as jnp
import numpy as np

from sem_repa_jax.diffusion import parameterization, schedules

FAMILIES = ("discrete", "edm")   # alpha-bar tables with integer timesteps | sigmas with c_noise


class PlanArrays(NamedTuple):
  """A plan's tables as a pytree, to pass into a jitted function."""
  timesteps: object        # (n,) int32 jax array, or float64 numpy (EDM c_noise)
  preconditioning: object  # (n, 3) float64 numpy: c_in, c_skip, c_out
  coefficients: object     # (n, k) float64 numpy: the step's columns


@dataclasses.dataclass(frozen=True)
class SamplerPlan:
  """Host-side tables for one sampling run: row i holds what step i needs.

  timesteps: (n,), what the network is called with: int64 descending (discrete) or float64 c_noise.
  preconditioning: (n, 3) float64 columns (c_in, c_skip, c_out): the network sees c_in x and
    x0 = c_skip x + c_out F (parameterization.Preconditioning).
  coefficients: (n, k) float64, the update's own columns (`Step.columns`).
  init_noise_sigma: the standard deviation of the initial noise (x_T = init_noise_sigma * N(0, I)).
  """
  method: str
  timesteps: np.ndarray
  preconditioning: np.ndarray
  coefficients: np.ndarray
  init_noise_sigma: float = 1.0

  @property
  def num_steps(self) -> int:
    return len(self.timesteps)

  def arrays(self) -> PlanArrays:
    t = self.timesteps
    t = jnp.asarray(t, jnp.int32) if np.issubdtype(t.dtype, np.integer) else np.asarray(t, np.float64)
    return PlanArrays(t, np.asarray(self.preconditioning), np.asarray(self.coefficients))


def _no_state(x):
  return ()


@dataclasses.dataclass(frozen=True)
class Step:
  """One registered step rule (see the module docstring for `build` and `update`)."""
  name: str
  family: str
  build: Callable[..., SamplerPlan]
  update: Callable
  columns: tuple
  init_state: Callable = _no_state   # x -> the update's carried state (e.g. the previous x0)
  stochastic: bool = False           # draws Gaussian noise every step: the loop needs a key


STEPS: dict = {}


def register_step(step: Step) -> Step:
  if step.name in STEPS:
    raise ValueError(f"sampler step {step.name!r} is already registered")
  if step.family not in FAMILIES:
    raise ValueError(f"sampler step {step.name!r}: family {step.family!r}, expected one of {FAMILIES}")
  STEPS[step.name] = step
  return step


def get_step(name: str) -> Step:
  if name not in STEPS:
    raise ValueError(f"sampler {name!r}: expected one of {', '.join(STEPS)}")
  return STEPS[name]


def step_names(family: Optional[str] = None) -> tuple:
  return tuple(n for n, s in STEPS.items() if family is None or s.family == family)


def _checked(plan: SamplerPlan, what: str) -> SamplerPlan:
  if not np.all(np.isfinite(plan.coefficients)):
    raise ValueError(f"{plan.method} plan for {plan.num_steps} steps has non-finite coefficients; "
                     f"is {what}?")
  bad = ~np.all(np.isfinite(plan.preconditioning), axis=1)
  if bad.any():
    raise ValueError(f"{plan.method} plan: the prediction type does not determine x0 at timestep "
                     f"{plan.timesteps[bad][0]} (e.g. 'epsilon' where alpha-bar is 0, the zero "
                     "terminal SNR step); use 'v_prediction' or 'sample'")
  return plan


# --- discrete alpha-bar schedules (CogVideoX) ----------------------------------------------------

def _discrete_tables(alphas_cumprod, num_inference_steps, timestep_spacing, num_train_timesteps,
                     steps_offset, set_alpha_to_one, prediction_type):
  """(t, prev_t, ab_t, ab_prev, preconditioning) for a DDIM-family scheduler with these settings."""
  ab = np.asarray(alphas_cumprod, np.float64)
  T = len(ab) if num_train_timesteps is None else int(num_train_timesteps)
  t = schedules.inference_timesteps(num_inference_steps, timestep_spacing,
                                    num_train_timesteps=T, steps_offset=steps_offset)
  # diffusers steps to t - T // n, not to the next entry of `timesteps` (they differ when n does
  # not divide T); below 0 it uses the final alpha-bar (1 with set_alpha_to_one).
  prev_t = t - T // len(t)
  final = 1.0 if set_alpha_to_one else ab[0]
  ab_prev = np.where(prev_t >= 0, ab[np.maximum(prev_t, 0)], final)
  ab_t = ab[t]
  c_skip, c_out = parameterization.discrete_x0_coefficients(ab_t, prediction_type)
  pre = np.stack([np.ones_like(ab_t), c_skip, c_out], axis=1)
  return t, prev_t, ab_t, ab_prev, pre


_DISCRETE_DEFAULTS = dict(timestep_spacing="trailing", num_train_timesteps=None, steps_offset=0,
                          set_alpha_to_one=True, prediction_type="v_prediction")
_TABLE_HINT = "alphas_cumprod in (0, 1] except possibly a zero last entry"


def ddim_plan(alphas_cumprod, num_inference_steps: int, **options) -> SamplerPlan:
  """Options (defaults: the released CogVideoX scheduler configs): timestep_spacing 'trailing',
  num_train_timesteps (len of the table), steps_offset 0, set_alpha_to_one True, prediction_type."""
  t, _, ab_t, ab_prev, pre = _discrete_tables(alphas_cumprod, num_inference_steps,
                                              **{**_DISCRETE_DEFAULTS, **options})
  with np.errstate(divide="ignore", invalid="ignore"):
    a = ((1 - ab_prev) / (1 - ab_t)) ** 0.5
    b = ab_prev ** 0.5 - ab_t ** 0.5 * a
  return _checked(SamplerPlan("ddim", t, pre, np.stack([a, b], axis=1)), _TABLE_HINT)


def ddim_update(c, x, x0, state, noise):
  c = c.astype(x.dtype)
  return c[0] * x + c[1] * x0, state


def dpm_plan(alphas_cumprod, num_inference_steps: int, **options) -> SamplerPlan:
  """SDE DPM-Solver++(2M) tables; options as `ddim_plan`."""
  t, prev_t, ab_t, ab_prev, pre = _discrete_tables(alphas_cumprod, num_inference_steps,
                                                   **{**_DISCRETE_DEFAULTS, **options})
  with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
    # log-SNR lambda = log sqrt(ab / (1 - ab)); -inf at zero terminal SNR and +inf at ab_prev = 1
    # give the limits diffusers gets from the same float64 arithmetic (mult1 0, mult2 -sqrt(ab')).
    lamb = np.log((ab_t / (1 - ab_t)) ** 0.5)
    lamb_next = np.log((ab_prev / (1 - ab_prev)) ** 0.5)
    h = lamb_next - lamb
    mult1 = ((1 - ab_prev) / (1 - ab_t)) ** 0.5 * np.exp(-h)
    mult2 = np.expm1(-2 * h) * ab_prev ** 0.5
    mult_noise = (1 - ab_prev) ** 0.5 * (1 - np.exp(-2 * h)) ** 0.5
    # Second order needs the previous x0 and is skipped on the last step; (1, 0) makes the
    # shared update reduce exactly to the first-order one.
    mult3, mult4 = np.ones_like(h), np.zeros_like(h)
    for i in range(1, len(t)):
      if prev_t[i] < 0:
        continue
      r = (lamb[i] - lamb[i - 1]) / h[i]
      mult3[i], mult4[i] = 1 + 1 / (2 * r), 1 / (2 * r)
  coeffs = np.stack([mult1, mult2, mult3, mult4, mult_noise], axis=1)
  return _checked(SamplerPlan("dpm", t, pre, coeffs), _TABLE_HINT)


def dpm_update(c, x, x0, old_x0, noise):
  """old_x0: the previous step's x0 (weighted 0 on first-order steps); the new state is x0."""
  c = c.astype(x.dtype)
  denoised = c[2] * x0 - c[3] * old_x0
  return c[0] * x - c[1] * denoised + c[4] * noise, x0


# --- EDM sigmas (Stable Video Diffusion, StableAnimator) -----------------------------------------

def euler_plan(alphas_cumprod, num_inference_steps: int, *, sigma_min: float = 0.002,
               sigma_max: float = 700.0, rho: float = 7.0, sigma_data: float = 1.0,
               timestep_spacing: str = "leading", prediction_type: str = "v_prediction"
               ) -> SamplerPlan:
  """EulerDiscreteScheduler.set_timesteps with use_karras_sigmas, timestep_type 'continuous' and
  final_sigmas_type 'zero'. The sigmas come from sigma_min / sigma_max as SVD's scheduler config
  sets them, so the training table (`alphas_cumprod`, may be None) is not read; the spacing only
  decides the initial noise scale, as in diffusers."""
  del alphas_cumprod
  if prediction_type != "v_prediction":
    raise ValueError(f"euler plan: prediction_type {prediction_type!r}; the EDM Euler step supports "
                     "'v_prediction' (SVD's, with continuous c_noise timesteps)")
  if timestep_spacing not in schedules.SPACINGS:
    raise ValueError(f"timestep spacing {timestep_spacing!r}: expected one of {schedules.SPACINGS}")
  if not 0 < sigma_min < sigma_max:
    raise ValueError(f"sigma_min={sigma_min}, sigma_max={sigma_max}: expected 0 < sigma_min < sigma_max")
  sigmas = schedules.karras_sigmas(num_inference_steps, sigma_min, sigma_max, rho)
  s = sigmas[:-1]
  c_skip, c_out, c_in, c_noise = parameterization.edm_v_preconditioning(s, sigma_data)
  top = float(sigmas.max())
  # diffusers' rule: the variance-preserving-looking scale for 'leading' spacing (SVD's config).
  init = top if timestep_spacing in ("linspace", "trailing") else (top ** 2 + 1) ** 0.5
  pre = np.stack([c_in, c_skip, c_out], axis=1)
  plan = SamplerPlan("euler", np.asarray(c_noise, np.float64), pre,
                     np.stack([s, sigmas[1:] - s], axis=1), init)
  return _checked(plan, "0 < sigma_min < sigma_max")


def euler_update(c, x, x0, state, noise):
  c = c.astype(x.dtype)
  derivative = (x - x0) / c[0]     # the ODE's dx/dsigma, as diffusers writes it
  return x + derivative * c[1], state


def _previous_x0(x):
  return jnp.zeros_like(x)


register_step(Step("ddim", "discrete", ddim_plan, ddim_update, columns=("a", "b")))
register_step(Step("dpm", "discrete", dpm_plan, dpm_update,
                   columns=("mult1", "mult2", "mult3", "mult4", "mult_noise"),
                   init_state=_previous_x0, stochastic=True))
register_step(Step("euler", "edm", euler_plan, euler_update, columns=("sigma", "dt")))
