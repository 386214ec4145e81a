"""Optical flow -> RGB by the Middlebury colour wheel (Baker et al. 2007), as
torchvision.utils.flow_to_image draws it: the colour of the motion score's flow maps (eval/motion.py).

The wheel has 55 colours in six ramps (red-yellow 15, yellow-green 6, green-cyan 4, cyan-blue 11,
blue-magenta 13, magenta-red 6; ramp values floor(255 i / n)). A flow (dx, dy) is first divided by
the largest flow norm of its image (+ float32 eps); its direction atan2(-dy, -dx) / pi in [-1, 1]
picks a fractional wheel position (a + 1) / 2 * 54 whose two neighbouring colours are blended
linearly (the last wraps to the first), and its normalized length n whitens the colour:
floor(255 * (1 - n (1 - colour))). Zero flow is white; the longest flow of the image is fully
saturated. Float32 in torchvision's order of operations, so the uint8 images are torchvision's
(tests/eval/test_flow_color.py: equal on its fields; of 3.1M channel values of random flows, 7
differ by 1, where an ulp of atan2 or sqrt moves a value across a floor). Unlike torchvision, which normalizes by the largest norm
of the whole batch it is given, every image here is normalized on its own: a score must not depend
on how frames were batched.
"""
import jax.numpy as jnp
import numpy as np

RAMPS = (("RY", 15), ("YG", 6), ("GC", 4), ("CB", 11), ("BM", 13), ("MR", 6))


def make_colorwheel() -> np.ndarray:
  """(55, 3) float32 RGB in [0, 255]: each ramp raises or lowers one channel, the others fixed."""
  ramp = lambda n: np.floor(255 * np.arange(n) / n)
  # (channel held at 255, channel ramped, rising) of each ramp
  moves = {"RY": (0, 1, True), "YG": (1, 0, False), "GC": (1, 2, True), "CB": (2, 1, False),
           "BM": (2, 0, True), "MR": (0, 2, False)}
  rows = []
  for name, n in RAMPS:
    held, ramped, rising = moves[name]
    block = np.zeros((n, 3))
    block[:, held] = 255
    block[:, ramped] = ramp(n) if rising else 255 - ramp(n)
    rows.append(block)
  return np.concatenate(rows).astype(np.float32)


COLORWHEEL = make_colorwheel()
COLORWHEEL.setflags(write=False)


def flow_to_image(flow):
  """flow (..., H, W, 2) in pixels, (dx, dy) -> uint8 (..., H, W, 3), each image normalized by its
  own largest flow norm (see the module docstring). NumPy or JAX arrays; traceable under jit."""
  flow = jnp.asarray(flow, jnp.float32)
  if flow.ndim < 3 or flow.shape[-1] != 2:
    raise ValueError(f"flow_to_image: expected flow (..., H, W, 2); got shape {flow.shape}")
  max_norm = jnp.sqrt(jnp.sum(flow ** 2, -1)).max((-2, -1), keepdims=True)[..., None]
  normalized = flow / (max_norm + jnp.finfo(jnp.float32).eps)
  wheel = jnp.asarray(COLORWHEEL)
  cols = wheel.shape[0]
  norm = jnp.sqrt(jnp.sum(normalized ** 2, -1))
  a = jnp.arctan2(-normalized[..., 1], -normalized[..., 0]) / jnp.float32(np.pi)
  fk = (a + 1) / 2 * (cols - 1)
  k0 = jnp.floor(fk).astype(jnp.int32)
  k1 = jnp.where(k0 + 1 == cols, 0, k0 + 1)
  f = (fk - k0)[..., None]
  col = (1 - f) * (wheel[k0] / 255.0) + f * (wheel[k1] / 255.0)
  return jnp.floor(255 * (1 - norm[..., None] * (1 - col))).astype(jnp.uint8)
