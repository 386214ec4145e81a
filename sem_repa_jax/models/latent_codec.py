"""A lossless space-to-depth latent codec that stands in for the CogVideoX VAE in the embedded demo.

The demo must run on a laptop CPU with no pretrained weights, so the VAE is replaced by a fixed,
exactly invertible rearrangement of pixels into channels with the VAE's interface and latent frame
structure:

- `apply(v, video (B,F,H,W,C) in [-1,1], method='encode') -> (mean, logvar)` of a posterior whose
  logvar is LOGVAR (so negative that exp(logvar / 2) is exactly 0 in float32 and float64: a
  posterior sample mean + std * eps IS the mean);
- `apply(v, latents, method='decode') -> video`; latents are unscaled, as from the real VAE, and
  `scaling_factor` plays the role of the VAE config's scaling factor.

Frames follow CogVideoX's causal VAE (temporal factor t = 4): a clip of F = 1 + t*k frames gives
1 + k latent frames. Latent frame 0 holds video frame 0 repeated t times (the causal VAE's first
frame sees only itself); latent frame j > 0 packs video frames t*j - t + 1 .. t*j. Space-to-depth
with factor p packs p x p pixels. Latents are (B, 1 + k, H/p, W/p, t*p*p*C) with channels ordered
(frame-in-group, row-in-patch, column-in-patch, colour). p = 8 matches the real VAE's spatial ratio.

Decoding frame 0 averages its t copies (exactly, by a pairwise sum of a power-of-two count), so a
latent that a model predicted imperfectly still decodes to the mean of its four estimates, while
decode(encode(x)) == x bit for bit.

Scaling factor: the latents hold the pixels unchanged, so their variance is the video's. sqrt(3) is
1 / std of a uniform distribution on [-1, 1], which makes scaled latents unit-variance for video
that spreads over the whole range; for data with another spread, measure its std and set
`scaling_factor = 1 / std` (the way CogVideoX's 1.15258426 and 0.7 were estimated).
"""
import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

# exp(-1000 / 2) underflows to exactly 0 in float32 and float64. A consumer that clamps logvar to
# [-30, 20] as diffusers' DiagonalGaussianDistribution does gets std exp(-15) ~ 3e-7 instead.
LOGVAR = -1000.0

_LATENT_AXES = ("batch", "frames", "height", "width", "channels")


def _is_power_of_two(n: int) -> bool:
  return n >= 1 and (n & (n - 1)) == 0


class LatentCodec(nn.Module):
  """Space-to-depth codec with the CogVideoX VAE interface. It has no parameters.

  spatial_factor: p, pixels per latent side (2 for the demo, 8 like the real VAE).
  temporal_factor: t, video frames per latent frame after the first (4 like the real VAE); a power
    of two so that averaging the copies of frame 0 is exact.
  scaling_factor: latents * scaling_factor ~ unit variance (see the module docstring).
  dtype: dtype of the outputs. param_dtype: unused (no parameters); kept so the codec takes the
    same constructor fields as the modules it replaces.
  """
  spatial_factor: int = 2
  temporal_factor: int = 4
  scaling_factor: float = math.sqrt(3.0)
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def _check_factors(self):
    p, t = self.spatial_factor, self.temporal_factor
    if not isinstance(p, int) or p < 1:
      raise ValueError(f"LatentCodec: spatial_factor must be a positive int; got {p!r}")
    if not isinstance(t, int) or not _is_power_of_two(t):
      raise ValueError(f"LatentCodec: temporal_factor must be a power of two (1, 2, 4, 8, ...); got {t!r}")

  def latent_channels(self, video_channels: int = 3) -> int:
    return self.temporal_factor * self.spatial_factor ** 2 * video_channels

  def latent_shape(self, video_shape) -> tuple:
    """(B, F, H, W, C) video shape -> latent shape; raises ValueError on a shape the codec cannot take."""
    self._check_factors()
    if len(video_shape) != 5:
      raise ValueError(f"LatentCodec.encode: expected a video (B, F, H, W, C); got shape {tuple(video_shape)}")
    b, f, h, w, c = video_shape
    p, t = self.spatial_factor, self.temporal_factor
    if f < 1 or (f - 1) % t:
      raise ValueError(
          f"LatentCodec.encode: video of shape {tuple(video_shape)} has {f} frames; expected "
          f"1 + {t}k frames (1, {1 + t}, {1 + 2 * t}, ...), the causal VAE's frame structure")
    if h % p or w % p:
      raise ValueError(
          f"LatentCodec.encode: video of shape {tuple(video_shape)} has H={h}, W={w}; expected both "
          f"divisible by spatial_factor={p}")
    return (b, 1 + (f - 1) // t, h // p, w // p, t * p * p * c)

  def video_shape(self, latent_shape) -> tuple:
    """Latent shape -> (B, F, H, W, C) video shape; raises ValueError on a shape the codec cannot take."""
    self._check_factors()
    if len(latent_shape) != 5:
      raise ValueError(f"LatentCodec.decode: expected latents (B, F, h, w, C); got shape {tuple(latent_shape)}")
    b, n, h, w, c = latent_shape
    p, t = self.spatial_factor, self.temporal_factor
    if n < 1 or c % (t * p * p):
      raise ValueError(
          f"LatentCodec.decode: latents of shape {tuple(latent_shape)}; expected at least one frame and "
          f"channels a multiple of temporal_factor * spatial_factor**2 = {t * p * p}")
    return (b, 1 + t * (n - 1), h * p, w * p, c // (t * p * p))

  def encode(self, video):
    """video (B, F, H, W, C) -> (mean, logvar), both (B, 1 + (F-1)/t, H/p, W/p, t*p*p*C)."""
    b, n, h, w, c = self.latent_shape(video.shape)
    p, t = self.spatial_factor, self.temporal_factor
    video = jnp.asarray(video)
    ch = video.shape[-1]
    first = jnp.broadcast_to(video[:, :1, None], (b, 1, t) + video.shape[2:])
    rest = video[:, 1:].reshape((b, n - 1, t) + video.shape[2:])
    grouped = jnp.concatenate([first, rest], axis=1)                 # (B, n, t, H, W, C)
    grouped = grouped.reshape(b, n, t, h, p, w, p, ch)
    mean = grouped.transpose(0, 1, 3, 5, 2, 4, 6, 7).reshape(b, n, h, w, c).astype(self.dtype)
    mean = nn.with_logical_constraint(mean, _LATENT_AXES)
    return mean, jnp.full(mean.shape, LOGVAR, mean.dtype)

  def decode(self, latents):
    """latents (B, n, h, w, t*p*p*C) -> video (B, 1 + t*(n-1), h*p, w*p, C)."""
    b, f, hh, ww, ch = self.video_shape(latents.shape)
    _, n, h, w, _ = latents.shape
    p, t = self.spatial_factor, self.temporal_factor
    grouped = jnp.asarray(latents).reshape(b, n, h, w, t, p, p, ch)
    grouped = grouped.transpose(0, 1, 4, 2, 5, 3, 6, 7).reshape(b, n, t, hh, ww, ch)
    copies = grouped[:, 0]                                           # (B, t, H, W, C)
    while copies.shape[1] > 1:                                       # pairwise: exact for equal copies
      copies = copies[:, 0::2] + copies[:, 1::2]
    first = copies * (1.0 / t)
    video = jnp.concatenate([first, grouped[:, 1:].reshape(b, f - 1, hh, ww, ch)], axis=1)
    return nn.with_logical_constraint(video.astype(self.dtype), _LATENT_AXES)

  def __call__(self, video):
    """Round trip through the latent space (used by `init`; equals `video` exactly)."""
    mean, _ = self.encode(video)
    return self.decode(mean)
