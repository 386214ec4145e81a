"""Denoising losses that diffusion methods share, as pure functions of predictions and targets.

L_t on a discrete alpha-bar schedule is written two ways that agree up to the weight: the v-MSE
mean((v_hat - v)^2) equals mean((x0_hat - x0)^2 / (1 - ab_t)) (v and x0 errors differ by the factor
sqrt(1 - ab_t) at fixed x_t), so capping that weight bounds the near-clean timesteps (weight up to
~1200 on CogVideoX's table), which otherwise outweigh the noisy ones where motion is decided
(JiT, Li & He 2025, clamps the same weight).
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
