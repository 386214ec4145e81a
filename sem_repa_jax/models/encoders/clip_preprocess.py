"""CLIP image preprocessing as Stable Video Diffusion does it (`_encode_image` in diffusers).

SVD does not use the CLIP processor's resize and crop: it blurs the [-1, 1] image with a Gaussian
whose sigma follows the downscale factor (skimage's anti-aliasing rule), resizes with torch's
bicubic (align_corners=True, A = -0.75, clamped borders) straight to 224x224 with no crop (the
aspect ratio is not kept), maps back to [0, 1] and normalizes with the OpenAI CLIP mean/std.

Blur (with reflect padding) and bicubic resize are both linear along each axis, so each axis becomes
one (out, in) matrix built in float64 at trace time and the image is two matrix products: exact,
jit-friendly, and cheap.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _gaussian_blur_matrix(n: int, kernel_size: int, sigma: float) -> np.ndarray:
  """(n, n): 1-D Gaussian filter with reflect padding (torch's 'reflect', edge not repeated)."""
  x = np.arange(kernel_size, dtype=np.float64) - kernel_size // 2
  if kernel_size % 2 == 0:
    x = x + 0.5
  g = np.exp(-x ** 2 / (2 * sigma ** 2))
  g = g / g.sum()
  pad = (kernel_size - 1) // 2
  if pad >= n:
    raise ValueError(f"image side {n} is too small for an anti-aliasing kernel of size "
                     f"{kernel_size} (reflect padding needs side > {pad})")
  m = np.zeros((n, n))
  for i in range(n):
    for j in range(kernel_size):
      src = i - pad + j
      src = -src if src < 0 else (2 * (n - 1) - src if src > n - 1 else src)
      m[i, src] += g[j]
  return m


def _bicubic_matrix(n_in: int, n_out: int, a: float = -0.75) -> np.ndarray:
  """(n_out, n_in): torch's bicubic interpolation with align_corners=True and clamped indices."""
  scale = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
  m = np.zeros((n_out, n_in))
  for i in range(n_out):
    real = scale * i
    idx = math.floor(real)
    t = real - idx
    near = lambda d: ((a + 2) * d - (a + 3)) * d * d + 1           # |d| <= 1
    far = lambda d: ((a * d - 5 * a) * d + 8 * a) * d - 4 * a       # 1 < |d| < 2
    for offset, w in zip((-1, 0, 1, 2), (far(t + 1), near(t), near(1 - t), far(2 - t))):
      m[i, min(max(idx + offset, 0), n_in - 1)] += w
  return m


def antialias_resize_matrix(n_in: int, n_out: int) -> np.ndarray:
  """(n_out, n_in) float64: diffusers' `_resize_with_antialiasing` along one axis."""
  sigma = max((n_in / n_out - 1.0) / 2.0, 0.001)
  kernel_size = int(max(2.0 * 2 * sigma, 3))
  if kernel_size % 2 == 0:
    kernel_size += 1
  return _bicubic_matrix(n_in, n_out) @ _gaussian_blur_matrix(n_in, kernel_size, sigma)


def resize_with_antialiasing(images, size: tuple[int, int]):
  """(B, H, W, C) -> (B, size[0], size[1], C), as diffusers' `_resize_with_antialiasing`."""
  _, h, w, _ = images.shape
  dtype = images.dtype if jnp.issubdtype(images.dtype, jnp.floating) else jnp.float32
  mh = jnp.asarray(antialias_resize_matrix(h, size[0]), jnp.float32)
  mw = jnp.asarray(antialias_resize_matrix(w, size[1]), jnp.float32)
  x = jnp.einsum("ih,bhwc->biwc", mh, jnp.asarray(images, jnp.float32),
                 precision=jax.lax.Precision.HIGHEST)
  x = jnp.einsum("jw,biwc->bijc", mw, x, precision=jax.lax.Precision.HIGHEST)
  return x.astype(dtype)


def preprocess_for_clip(pixels, size: int = 224):
  """(B, H, W, 3) images in [-1, 1] -> (B, size, size, 3) CLIP-normalized input, float32."""
  if pixels.ndim != 4 or pixels.shape[-1] != 3:
    raise ValueError(f"pixels: expected (batch, height, width, 3) in [-1, 1], got shape "
                     f"{pixels.shape}")
  x = resize_with_antialiasing(jnp.asarray(pixels, jnp.float32), (size, size))
  x = (x + 1.0) / 2.0
  return (x - jnp.asarray(CLIP_MEAN, jnp.float32)) / jnp.asarray(CLIP_STD, jnp.float32)
