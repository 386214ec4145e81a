"""Long videos through a denoiser trained on short clips: the official StableAnimator tiling,
shared by the SVD-based animation pipelines (pipelines/stableanimator.py, pipelines/vividpose.py).

Each window holds frame 0 and tile_size - 1 consecutive frames, with stride tile_size -
tile_overlap and a last window ending on the last frame; a window's outputs are weighted by
min(u, 2 - u), u = (j + 0.5) / (tile_size / 2), summed and divided by each frame's weight sum.
num_frames <= tile_size: one window of every frame. The initial noise has one window's frames,
repeated over time (the official periodic noise).
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from sem_repa_jax.diffusion import guidance
from sem_repa_jax.diffusion.parameterization import Preconditioning
from sem_repa_jax.pipelines.svd_i2v import SamplingSettings, checked_input


@dataclasses.dataclass(frozen=True)
class WindowedSettings(SamplingSettings):
  """SVD's sampling settings and the window tiling."""
  tile_size: int = 16
  tile_overlap: int = 4

  def check(self, spatial_compression: int):
    super().check(spatial_compression)
    if self.tile_size < 1 or not 0 <= self.tile_overlap < self.tile_size:
      raise ValueError(f"tile_size={self.tile_size}, tile_overlap={self.tile_overlap}: expected "
                       "tile_size >= 1 and 0 <= tile_overlap < tile_size")

  def windows(self) -> np.ndarray:
    return window_indices(self.num_frames, self.tile_size, self.tile_overlap)


def window_indices(num_frames: int, tile_size: int, tile_overlap: int) -> np.ndarray:
  """(windows, T) frame indices of the official tiling; one window of every frame when
  num_frames <= tile_size."""
  if num_frames <= tile_size:
    return np.arange(num_frames)[None]
  starts = range(0, num_frames - tile_size + 1, tile_size - tile_overlap)
  windows = [[0, *range(i + 1, i + tile_size)] for i in starts]
  if windows[-1][-1] < num_frames - 1:
    windows.append([0, *range(num_frames - tile_size + 1, num_frames)])
  return np.array(windows, np.int32)


def window_weights(length: int) -> np.ndarray:
  """(T,) the triangular weights of a window's frames, min(u, 2 - u) at u = (j + 0.5) * 2 / T."""
  u = (np.arange(length, dtype=np.float32) + 0.5) * 2.0 / length
  return np.minimum(u, 2.0 - u)


def periodic_noise(noise, num_frames: int):
  """(B, T, h, w, C) noise of one window -> (B, num_frames, ...) repeating it over time."""
  reps = num_frames // noise.shape[1] + 1
  return jnp.tile(noise, (1, reps, 1, 1, 1))[:, :num_frames]


def windowed(denoiser, x_in, out_shape, windows, weights):
  """The weighted mean over windows of denoiser(x_in[:, idx], idx) -> (B, T, h, w, C_out), one
  window per step of a lax.scan (memory: one window's); out_shape (B, F, h, w, C_out)."""
  frame_weight = jnp.zeros((out_shape[1],), jnp.float32).at[windows].add(weights)

  def window(total, idx):
    out = denoiser(x_in[:, idx], idx).astype(jnp.float32)
    return total.at[:, idx].add(out * weights[:, None, None, None]), None

  total, _ = jax.lax.scan(window, jnp.zeros(out_shape, jnp.float32), windows)
  return total / frame_weight[:, None, None, None]


def guided_denoiser(network, image_latents, windows, weights, do_cfg: bool):
  """The sampler's denoise(x, pre, scale) -> x0 of an SVD-style U-Net over windows: [c_in x,
  image latents] on channels, for [uncond, cond] in one batch when do_cfg (image_latents then
  has both halves), per-frame classifier-free guidance. network(x_window, c_noise (B,), idx) ->
  the raw output of the window's frames idx."""
  def denoise(x, pre: Preconditioning, scale):
    x_in = pre.scale_input(x)
    x_in = jnp.concatenate([x_in, x_in]) if do_cfg else x_in
    x_in = jnp.concatenate([x_in, image_latents], axis=-1)
    t_b = jnp.full((x_in.shape[0],), pre.timestep, jnp.float32)
    out = windowed(lambda x_w, idx: network(x_w, t_b, idx), x_in,
                   (x_in.shape[0],) + x.shape[1:], windows, weights)
    if do_cfg:
      uncond, cond = jnp.split(out, 2)
      out = guidance.classifier_free_guidance(uncond, cond, scale)
    return pre.to_x0(x, out)
  return denoise


def initial_noise(key, latents, latent_shape, image_noise, image_shape):
  """(one window's initial noise latent_shape, the augmentation noise image_shape): the given
  ones checked, the missing ones drawn from key's two halves."""
  k_noise, k_image = jax.random.split(key)
  if latents is None:
    latents = jax.random.normal(k_noise, latent_shape)
  if image_noise is None:
    image_noise = jax.random.normal(k_image, image_shape)
  return (checked_input(latents, latent_shape, "latents"),
          checked_input(image_noise, image_shape, "image_noise"))
