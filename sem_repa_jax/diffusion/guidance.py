"""Classifier-free guidance (Ho & Salimans 2022): scales per step (CogVideoX's static or dynamic CFG)
and per frame (Stable Video Diffusion's ramp over the frames), and the combination itself.

A guidance table has the steps leading: (n,) one scale per step, or (n, F) one per step and frame;
step i's row (a scalar or (F,)) is what the sampler hands the model-side function, and
`classifier_free_guidance` broadcasts an (F,) row over the frame axis of (B, F, h, w, C) latents.
"""
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


def frame_guidance_scales(num_frames: int, min_guidance_scale: float = 1.0,
                          max_guidance_scale: float = 3.0) -> np.ndarray:
  """(F,) float64 scales rising linearly from the first frame to the last, as
  StableVideoDiffusionPipeline guides: the conditioning frame needs little guidance, the last most."""
  return np.linspace(min_guidance_scale, max_guidance_scale, num_frames, dtype=np.float64)


def every_step(frame_scales, num_steps: int) -> np.ndarray:
  """An (F,) per-frame table repeated for each of `num_steps` steps: (n, F)."""
  f = np.asarray(frame_scales, np.float64)
  if f.ndim != 1:
    raise ValueError(f"per-frame guidance scales of shape {f.shape}: expected (frames,)")
  return np.broadcast_to(f, (num_steps, f.shape[0])).copy()


def step_table(scales, num_steps: int):
  """The sampler's guidance table: zeros (n,) for None, else `scales` checked to have n rows."""
  if scales is None:
    return jnp.zeros((num_steps,), jnp.float32)
  scales = jnp.asarray(scales)
  if scales.ndim not in (1, 2) or scales.shape[0] != num_steps:
    raise ValueError(f"guidance scales of shape {scales.shape}: expected ({num_steps},) per step or "
                     f"({num_steps}, frames) per step and frame (guidance.every_step)")
  return scales


def classifier_free_guidance(uncond, cond, scale, *, frame_axis: int = 1):
  """uncond + scale * (cond - uncond), with scale cast to the outputs' dtype; a (F,) scale is one
  per frame, along `frame_axis` of (B, F, h, w, C) outputs."""
  scale = jnp.asarray(scale, uncond.dtype)
  if scale.ndim == 1:
    shape = [1] * uncond.ndim
    shape[frame_axis] = scale.shape[0]
    scale = scale.reshape(shape)
  elif scale.ndim:
    raise ValueError(f"guidance scale of shape {scale.shape}: expected a scalar or (frames,)")
  return uncond + scale * (cond - uncond)
