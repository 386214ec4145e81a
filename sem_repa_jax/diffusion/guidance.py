"""Classifier-free guidance (Ho & Salimans 2022) with CogVideoX's static or dynamic scale."""
import math

import jax.numpy as jnp
import numpy as np


def guidance_scales(timesteps, guidance_scale: float, *, use_dynamic_cfg: bool = False) -> np.ndarray:
  """Per-step guidance scales (float64), as CogVideoXImageToVideoPipeline computes them.

  Dynamic CFG in the installed diffusers is
    1 + g * (1 - cos(pi * ((n - t) / n) ** 5)) / 2
  with n the number of inference steps and t the raw timestep (999, 979, ...), i.e. the timestep is
  NOT divided by the 1000 training steps there; we reproduce the pipeline, not the intent.
  """
  t = np.asarray(timesteps)
  n = len(t)
  if not use_dynamic_cfg:
    return np.full((n,), float(guidance_scale), np.float64)
  return np.array([1 + guidance_scale * ((1 - math.cos(math.pi * ((n - int(ti)) / n) ** 5.0)) / 2)
                   for ti in t], np.float64)


def classifier_free_guidance(uncond, cond, scale):
  """uncond + scale * (cond - uncond), with scale cast to the outputs' dtype."""
  scale = jnp.asarray(scale, uncond.dtype)
  return uncond + scale * (cond - uncond)
