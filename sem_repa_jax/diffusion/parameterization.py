"""Parameterizations: what a network's raw output means, and the clean-sample estimate x0 it implies.

Samplers work on x0 (the common currency): every parameterization here is affine in the network
output F at a fixed noisy input x,
  x0 = c_skip x + c_out F(c_in x, timestep),
so one `Preconditioning` row per step (built on the host in float64 by the step's plan) covers
- discrete alpha-bar schedules (CogVideoX): c_in = 1, the timestep an integer, and (c_skip, c_out)
  from the prediction type: v (sqrt(ab), -sqrt(1-ab)), eps (1/sqrt(ab), -sqrt(1-ab)/sqrt(ab)),
  x0 (0, 1);
- EDM (Karras et al. 2022) as Stable Video Diffusion uses it: v-prediction with sigma_data 1,
  c_in = 1/sqrt(s^2+1), c_noise = 0.25 ln s as the timestep.
Guidance is linear in F, and x0 is affine in F at fixed x, so combining raw outputs and then
converting equals converting and combining.

The functions of an alpha-bar table (`velocity`, `v_to_x0`, ..., `prediction_to_v`) serve training,
where losses are written on v; they are jittable, `alphas_cumprod` a numpy table or a jax array and
`t` integer timesteps (batch leading).
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sem_repa_jax.diffusion.schedules import alpha_bar_at

PREDICTION_TYPES = ("v_prediction", "sample", "epsilon")   # diffusers' names


class Preconditioning(NamedTuple):
  """One step's network call and x0 conversion (a pytree; fields are scalars inside the loop)."""
  timestep: jax.Array   # what the network is called with: integer t, or EDM's c_noise
  c_in: jax.Array
  c_skip: jax.Array
  c_out: jax.Array

  def scale_input(self, x):
    return jnp.asarray(self.c_in).astype(x.dtype) * x

  def to_x0(self, x, output):
    """x0 = c_skip x + c_out F, with the host coefficients cast to x's dtype (as torch does for its
    0-dim float64 tensors)."""
    c_skip, c_out = (jnp.asarray(c).astype(x.dtype) for c in (self.c_skip, self.c_out))
    return c_skip * x + c_out * output


def x0_denoiser(network):
  """network(x_in, timestep, guidance_scale) -> raw output  ==>  denoise(x, pre, guidance_scale) -> x0,
  the model-side function `samplers.sample_loop` calls."""
  def denoise(x, pre: Preconditioning, guidance_scale):
    return pre.to_x0(x, network(pre.scale_input(x), pre.timestep, guidance_scale).astype(x.dtype))
  return denoise


def discrete_x0_coefficients(alpha_bar, prediction_type: str = "v_prediction"):
  """(c_skip, c_out), float64, of x0 = c_skip x_t + c_out F at alpha-bars `alpha_bar` (host)."""
  ab = np.asarray(alpha_bar, np.float64)
  sqrt_ab, sqrt_1m = ab ** 0.5, (1 - ab) ** 0.5
  if prediction_type == "v_prediction":
    return sqrt_ab, -sqrt_1m
  if prediction_type == "sample":
    return np.zeros_like(ab), np.ones_like(ab)
  if prediction_type == "epsilon":
    with np.errstate(divide="ignore", invalid="ignore"):
      return 1 / sqrt_ab, -sqrt_1m / sqrt_ab
  raise ValueError(f"prediction_type {prediction_type!r}: expected one of {PREDICTION_TYPES}")


def edm_v_preconditioning(sigma, sigma_data: float = 1.0):
  """(c_skip, c_out, c_in, c_noise) of SVD's v-parameterized EDM denoiser.

  x0 = c_skip x + c_out F(c_in x, c_noise); with sigma_data 1 this is diffusers' Euler v-prediction
  x0 = -s/sqrt(s^2+1) F + x/(s^2+1), and c_noise = 0.25 ln s is the 'continuous' timestep.
  """
  s2 = sigma ** 2 + sigma_data ** 2
  c_skip = sigma_data ** 2 / s2
  c_out = -sigma * sigma_data / s2 ** 0.5
  c_in = 1 / s2 ** 0.5
  c_noise = 0.25 * (jnp.log(sigma) if isinstance(sigma, jax.Array) else np.log(sigma))
  return c_skip, c_out, c_in, c_noise


def edm_training_preconditioning(sigma, ndim: int, sigma_data: float = 1.0) -> Preconditioning:
  """One Preconditioning for a batch of per-example training sigmas (B,), its coefficients shaped
  (B, 1, ...) to broadcast against latents of rank `ndim`; the timestep stays (B,) (c_noise), as the
  SVD U-Net takes it. Jittable: the sampler builds its rows on the host, training draws sigma on
  device."""
  sigma = jnp.asarray(sigma, jnp.float32)
  c_skip, c_out, c_in, c_noise = edm_v_preconditioning(sigma, sigma_data)
  shape = sigma.shape + (1,) * (ndim - sigma.ndim)
  return Preconditioning(timestep=c_noise, c_in=c_in.reshape(shape), c_skip=c_skip.reshape(shape),
                         c_out=c_out.reshape(shape))


# --- v <-> x0 / eps on an alpha-bar table (training) ----------------------------------------------

def velocity(alphas_cumprod, x0, noise, t):
  """The v-prediction target v = sqrt(ab) eps - sqrt(1 - ab) x0 (diffusers `get_velocity`)."""
  ab = alpha_bar_at(alphas_cumprod, t, x0)
  return ab ** 0.5 * noise - (1 - ab) ** 0.5 * x0


def v_to_x0(alphas_cumprod, x_t, v, t):
  ab = alpha_bar_at(alphas_cumprod, t, x_t)
  return ab ** 0.5 * x_t - (1 - ab) ** 0.5 * v


def v_to_eps(alphas_cumprod, x_t, v, t):
  ab = alpha_bar_at(alphas_cumprod, t, x_t)
  return ab ** 0.5 * v + (1 - ab) ** 0.5 * x_t


def x0_to_v(alphas_cumprod, x_t, x0, t):
  """Inverse of v_to_x0 at fixed x_t (undefined where ab_t = 1)."""
  ab = alpha_bar_at(alphas_cumprod, t, x_t)
  return (ab ** 0.5 * x_t - x0) / (1 - ab) ** 0.5


def eps_to_v(alphas_cumprod, x_t, eps, t):
  """Inverse of v_to_eps at fixed x_t (undefined where ab_t = 0)."""
  ab = alpha_bar_at(alphas_cumprod, t, x_t)
  return (eps - (1 - ab) ** 0.5 * x_t) / ab ** 0.5


def prediction_to_v(alphas_cumprod, x_t, output, t, prediction_type: str = "v_prediction"):
  """A network's output read as `prediction_type`, returned as the velocity v it implies.

  CogVideoX predicts v. 'sample' (x0) prediction keeps noise out of the clean-latent estimate of a
  network narrower than its patch tokens (JiT, Li & He 2025): a v or epsilon network must
  reproduce the noise exactly, and what it cannot reproduce stays in z0_hat. Training losses are
  written on v, so a model trained with either reads the same there.
  """
  if prediction_type == "v_prediction":
    return output
  if prediction_type == "sample":
    return x0_to_v(alphas_cumprod, x_t, output, t)
  if prediction_type == "epsilon":
    return eps_to_v(alphas_cumprod, x_t, output, t)
  raise ValueError(f"prediction_type {prediction_type!r}: expected one of {PREDICTION_TYPES}")
