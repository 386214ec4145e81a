"""Denoising losses that diffusion methods share, as pure functions of predictions and targets.

L_t on a discrete alpha-bar schedule is written two ways that agree up to the weight: the v-MSE
mean((v_hat - v)^2) equals mean((x0_hat - x0)^2 / (1 - ab_t)) (v and x0 errors differ by the factor
sqrt(1 - ab_t) at fixed x_t), so capping that weight bounds the near-clean timesteps (weight up to
~1200 on CogVideoX's table), which otherwise outweigh the noisy ones where motion is decided
(JiT, Li & He 2025, clamps the same weight).

On EDM's continuous sigmas (Stable Video Diffusion, StableAnimator) the loss is written on x0
directly: lambda(sigma) (D(x; sigma) - x0)^2 with Karras et al.'s weight lambda = 1 / c_out^2,
which makes the effective target of the raw network output unit-variance at every sigma.
"""
import jax.numpy as jnp

from sem_repa_jax.diffusion import parameterization, schedules


def mse(a, b):
  return jnp.mean(jnp.square(a.astype(jnp.float32) - b.astype(jnp.float32)))


def v_mse(v_hat, x0, eps, alphas_cumprod, t):
  """mean((v_hat - v)^2), v the velocity of (x0, eps) at timesteps t (B,)."""
  return mse(v_hat, parameterization.velocity(alphas_cumprod, x0, eps, t))


def capped_x0_mse(x0_hat, x0, alphas_cumprod, t, max_weight: float):
  """mean(min(1 / (1 - ab_t), max_weight) (x0_hat - x0)^2)."""
  err = jnp.square(x0_hat.astype(jnp.float32) - x0.astype(jnp.float32))
  ab = schedules.alpha_bar_at(alphas_cumprod, t, err)
  return jnp.mean(jnp.minimum(1.0 / (1.0 - ab), max_weight) * err)


def denoising_loss(v_hat, x0_hat, x0, eps, alphas_cumprod, t, max_weight: float = 0.0):
  """L_t: the v-MSE, or with max_weight > 0 the x0 error under the capped weight."""
  if max_weight > 0:
    return capped_x0_mse(x0_hat, x0, alphas_cumprod, t, max_weight)
  return v_mse(v_hat, x0, eps, alphas_cumprod, t)


# --- EDM (continuous sigmas) ----------------------------------------------------------------------

def edm_loss_weight(sigma, sigma_data: float = 1.0):
  """lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 (Karras et al. 2022, Table 1);
  with sigma_data 1, StableAnimator's (1 + sigma^2) / sigma^2."""
  sigma = jnp.asarray(sigma, jnp.float32)
  return (sigma ** 2 + sigma_data ** 2) / (sigma * sigma_data) ** 2


def edm_denoising_loss(x0_hat, x0, sigma, *, sigma_data: float = 1.0, weight=None):
  """mean(lambda(sigma) (x0_hat - x0)^2 weight) over every element.

  x0_hat: the denoiser's output D = c_skip x + c_out F (parameterization.edm_training_preconditioning
  gives the coefficients); sigma: (B,) per-example sigmas; weight: None, or an array broadcastable
  to x0 (e.g. StableAnimator's 1 + M, M the face mask at latent size, (B, F, h, w, 1)). The mean is
  over elements, not normalized by the weight (as StableAnimator's train.py).
  """
  err = jnp.square(x0_hat.astype(jnp.float32) - x0.astype(jnp.float32))
  lam = edm_loss_weight(sigma, sigma_data)
  err = lam.reshape(lam.shape + (1,) * (err.ndim - lam.ndim)) * err
  if weight is not None:
    err = err * jnp.asarray(weight, jnp.float32)
  return jnp.mean(err)
