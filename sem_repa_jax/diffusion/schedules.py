"""Noise schedules: discrete alpha-bar tables (CogVideoX) and continuous sigmas (EDM / SVD).

Tables are built once on the host in float64 numpy, as diffusers builds them in float64 torch, and
cast to the compute dtype only where they meet an array (`add_noise`, the sampler coefficients).
Functions that take arrays (`add_noise`, `alpha_bar_at`) are jittable; `alpha_bar` may be a numpy
table or a jax array, and `t` an integer array of timesteps. What a network's output means at a
noise level (v / eps / x0, EDM preconditioning) is in parameterization.py.
"""
import math
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtri

SPACINGS = ("trailing", "leading", "linspace")


# --- discrete schedules (DDPM family) -------------------------------------------------------------

def scaled_linear_betas(num_train_timesteps: int = 1000, beta_start: float = 0.00085,
                        beta_end: float = 0.012) -> np.ndarray:
  """Latent-diffusion betas: linear in sqrt(beta), squared; float64."""
  return np.linspace(beta_start ** 0.5, beta_end ** 0.5, num_train_timesteps, dtype=np.float64) ** 2


def alphas_cumprod_from_betas(betas: np.ndarray) -> np.ndarray:
  return np.cumprod(1.0 - np.asarray(betas, np.float64))


def shift_snr(alphas_cumprod: np.ndarray, snr_shift_scale: float) -> np.ndarray:
  """SD3-style SNR shift used by CogVideoX: SNR is divided by `snr_shift_scale`.

  ab / (s + (1 - s) ab) is the alpha-bar whose SNR ab/(1-ab) is the old SNR over s.
  """
  ab = np.asarray(alphas_cumprod, np.float64)
  return ab / (snr_shift_scale + (1.0 - snr_shift_scale) * ab)


def rescale_zero_terminal_snr(alphas_cumprod: np.ndarray) -> np.ndarray:
  """Lin et al. 2023, Algorithm 1: shift and scale sqrt(alpha-bar) so the last step has SNR 0."""
  s = np.sqrt(np.asarray(alphas_cumprod, np.float64))
  s0, s_last = s[0], s[-1]
  s = (s - s_last) * (s0 / (s0 - s_last))
  return s ** 2


def cogvideox_alphas_cumprod(snr_shift_scale: float = 1.0, *, rescale_zero_snr: bool = True,
                             num_train_timesteps: int = 1000, beta_start: float = 0.00085,
                             beta_end: float = 0.012) -> np.ndarray:
  """alpha-bar of CogVideoX{DDIM,DPM}Scheduler: scaled-linear betas, SNR shift, zero terminal SNR.

  snr_shift_scale: 3.0 for CogVideoX-2b, 1.0 for 5b, 5b-I2V and 1.5 (their scheduler configs).
  """
  ab = alphas_cumprod_from_betas(scaled_linear_betas(num_train_timesteps, beta_start, beta_end))
  ab = shift_snr(ab, snr_shift_scale)
  return rescale_zero_terminal_snr(ab) if rescale_zero_snr else ab


def inference_timesteps(num_inference_steps: int, spacing: str = "trailing", *,
                        num_train_timesteps: int = 1000, steps_offset: int = 0) -> np.ndarray:
  """Descending integer timesteps, as diffusers' DDIM-family `set_timesteps` (Lin et al. Table 2)."""
  n, T = int(num_inference_steps), int(num_train_timesteps)
  if not 1 <= n <= T:
    raise ValueError(f"num_inference_steps={n}: expected 1..{T} (num_train_timesteps)")
  if spacing == "linspace":
    t = np.linspace(0, T - 1, n).round()[::-1].astype(np.int64)
  elif spacing == "leading":
    t = (np.arange(0, n) * (T // n)).round()[::-1].astype(np.int64) + steps_offset
  elif spacing == "trailing":
    t = np.round(np.arange(T, 0, -T / n)).astype(np.int64) - 1
  else:
    raise ValueError(f"timestep spacing {spacing!r}: expected one of {SPACINGS}")
  return np.ascontiguousarray(t)


def alpha_bar_at(table, t, like):
  """table[t] (e.g. alpha-bar at timesteps t) in like's dtype, shaped to broadcast against like
  (batch leading)."""
  v = jnp.asarray(table, like.dtype)[jnp.asarray(t)]
  return v.reshape(v.shape + (1,) * (like.ndim - v.ndim))


def add_noise(alphas_cumprod, x0, noise, t):
  """Forward process x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps; t: (B,) integer timesteps.

  As diffusers: the table is cast to x0's dtype before the square roots.
  """
  ab = alpha_bar_at(alphas_cumprod, t, x0)
  return ab ** 0.5 * x0 + (1 - ab) ** 0.5 * noise


# --- continuous sigmas (EDM; Stable Video Diffusion, StableAnimator) ------------------------------

def karras_sigmas(num_inference_steps: int, sigma_min: float = 0.002, sigma_max: float = 700.0,
                  rho: float = 7.0, *, append_zero: bool = True) -> np.ndarray:
  """Karras et al. 2022 eq. 5, descending, float64; SVD's EulerDiscreteScheduler appends a final 0."""
  ramp = np.linspace(0, 1, num_inference_steps)
  lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
  sigmas = (hi + ramp * (lo - hi)) ** rho
  return np.concatenate([sigmas, [0.0]]) if append_zero else sigmas


def shifted_cosine_sigmas(u, *, sigma_min: float = 0.002, sigma_max: float = 700.0,
                          image_d: float = 64.0, noise_d_low: float = 32.0, noise_d_high: float = 64.0,
                          sigma_data: float = 0.5):
  """Training sigmas of StableAnimator (k-diffusion's 'cosine-interpolated' density) at u in [0, 1].

  The log-SNR of a cosine schedule is shifted for resolution (simple diffusion, Hoogeboom et al.)
  at two noise resolutions and the two are interpolated by u itself; defaults are StableAnimator's
  train.py constants. u near 0 gives sigma_max, near 1 gives sigma_min.
  """
  logsnr_min = -2 * math.log(sigma_min / sigma_data)
  logsnr_max = -2 * math.log(sigma_max / sigma_data)

  def cosine(t, lo, hi):
    t_min = math.atan(math.exp(-0.5 * hi))
    t_max = math.atan(math.exp(-0.5 * lo))
    return -2 * jnp.log(jnp.tan(t_min + t * (t_max - t_min)))

  def shifted(t, noise_d):
    shift = 2 * math.log(noise_d / image_d)
    return cosine(t, logsnr_min - shift, logsnr_max - shift) + shift

  u = jnp.asarray(u)
  low, high = shifted(u, noise_d_low), shifted(u, noise_d_high)
  logsnr = low + u * (high - low)
  return jnp.exp(-logsnr / 2) * sigma_data


def stratified_uniform(key, batch: int, dtype=jnp.float32):
  """One uniform per stratum [i/B, (i+1)/B): lower variance across a batch than i.i.d. draws."""
  return (jnp.arange(batch, dtype=dtype) + jax.random.uniform(key, (batch,), dtype)) / batch


def lognormal_sigmas(u, *, p_mean: float = -1.2, p_std: float = 1.2):
  """EDM's training density ln sigma ~ N(p_mean, p_std^2) (Karras et al. 2022, Table 1 defaults) at
  quantiles u in (0, 1): the inverse CDF, so stratified u stratify it too."""
  u = jnp.clip(jnp.asarray(u, jnp.float32), 1e-7, 1 - 1e-7)
  return jnp.exp(p_mean + p_std * ndtri(u))


TRAINING_DENSITIES = {"cosine_interpolated": shifted_cosine_sigmas, "lognormal": lognormal_sigmas}


def sample_training_sigmas(key, batch: int, *, density: str = "cosine_interpolated",
                           stratified: bool = True, **kwargs):
  """Per-example training sigmas (B,): `density` 'cosine_interpolated' (StableAnimator's,
  shifted_cosine_sigmas; kwargs sigma_min, sigma_max, image_d, noise_d_low, noise_d_high,
  sigma_data) or 'lognormal' (EDM's; kwargs p_mean, p_std), at (stratified) uniforms."""
  if density not in TRAINING_DENSITIES:
    raise ValueError(f"training sigma density {density!r}: expected one of "
                     f"{', '.join(TRAINING_DENSITIES)}")
  u = stratified_uniform(key, batch) if stratified else jax.random.uniform(key, (batch,))
  return TRAINING_DENSITIES[density](u, **kwargs)


def snr(alphas_cumprod: np.ndarray, t: Optional[np.ndarray] = None) -> np.ndarray:
  ab = np.asarray(alphas_cumprod, np.float64)
  ab = ab if t is None else ab[t]
  with np.errstate(divide="ignore"):
    return ab / (1 - ab)
