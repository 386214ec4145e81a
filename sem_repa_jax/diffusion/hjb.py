"""StableAnimator's HJB face optimization: the x0 prediction of a denoising step, refined so that
the faces it decodes to carry the reference identity (porting-notes.md, StableAnimator inference).

On steps first_step..last_step (inclusive) of num_steps:
  z = copy of x0;  adam = optax.adam(learning_rate * (1 - i / num_steps)), a fresh state each step
  iterations x:  frames = clip(decode(z), -1, 1)                 (F, H, W, 3), every frame
                 faces_k = bilinear resize of frames_k[box_k] to face_size (align_corners=False)
                 loss = mean over frames with a face of |1 - cos(embed(faces)_k, e_ref)|
                 z = z + adam(grad_z loss)
  x0 <- z
The gradient runs through the VAE decoder and the face embedder (ArcFace), never the U-Net, and
the whole inner loop is part of the compiled sampling program (`make_refine_x0` is the sampler's
refine_x0 hook). clip(., -1, 1) is the official [-1, 1] -> uint8 scale -> [-1, 1] round trip
without the rounding. Boxes are the bounding boxes of the driving video's face-mask pixels
(`mask_boxes`); a frame without one leaves the loss (the official code has no such case), and a
step where no frame has a face leaves x0 unchanged.

decode(z) and embed(faces) are the caller's: decode(z (F, h, w, C) scaled latents) -> frames
(F, H, W, 3) in about [-1, 1] (divide by the VAE scaling factor inside; chunking and remat are the
decoder's), embed(faces (K, S, S, 3) RGB in [-1, 1]) -> (K, D) embeddings.
"""
from dataclasses import dataclass
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax


@dataclass(frozen=True)
class HJBConfig:
  """Official values: steps 0..20 of 25, 3 Adam iterations, lr 0.1 (1 - i / 25), 112x112 faces."""
  first_step: int = 0
  last_step: int = 20           # inclusive
  iterations: int = 3
  learning_rate: float = 0.1    # at step 0; times (1 - i / num_steps) at step i
  face_size: int = 112          # the face embedder's input side
  adam_eps: float = 1e-8        # torch's and optax's default

  def __post_init__(self):
    if self.iterations < 1:
      raise ValueError(f"hjb.iterations={self.iterations}: expected at least 1")
    if not 0 <= self.first_step <= self.last_step:
      raise ValueError(f"hjb steps {self.first_step}..{self.last_step}: expected "
                       f"0 <= first_step <= last_step")

  def check_steps(self, num_steps: int):
    """A sampler of num_steps steps reaches last_step."""
    if self.last_step >= num_steps:
      raise ValueError(f"hjb.last_step={self.last_step}: the sampler has only {num_steps} steps "
                       f"(0..{num_steps - 1})")


def mask_boxes(masks, threshold: float = 0.5):
  """Face masks (F, H, W) with values in [0, 1] (or 0/255 uint8) -> (boxes (F, 4) int32 rows
  [y_min, y_max, x_min, x_max], inclusive, of the pixels above threshold; has_face (F,) bool).
  A frame without such a pixel gets the whole frame as its box and has_face False."""
  m = np.asarray(masks)
  if m.ndim != 3:
    raise ValueError(f"face masks must be (F, H, W), got {m.shape}")
  on = m > (threshold * 255 if m.dtype == np.uint8 else threshold)
  f, h, w = on.shape
  boxes = np.tile(np.array([0, h - 1, 0, w - 1], np.int32), (f, 1))
  rows, cols = on.any(axis=2), on.any(axis=1)
  has_face = rows.any(axis=1)
  for k in np.flatnonzero(has_face):
    ys, xs = np.flatnonzero(rows[k]), np.flatnonzero(cols[k])
    boxes[k] = (ys[0], ys[-1], xs[0], xs[-1])
  return boxes, has_face


def _source_taps(start, length, size: int):
  """Rows (or columns) of a crop [start, start + length) that bilinear resizing to `size` reads, as
  torch's F.interpolate(mode='bilinear', align_corners=False): (i0, i1, weight of i1), each (size,).

  The source coordinate (i + 0.5) length / size - 0.5 is computed exactly, in integers
  ((2i + 1) length - size over 2 size); float32 arithmetic would round it by up to ~1e-5 px at
  100 px, as torch's own kernel does."""
  length = jnp.asarray(length, jnp.int32)
  numerator = jnp.maximum((2 * jnp.arange(size, dtype=jnp.int32) + 1) * length - size, 0)
  lo = numerator // (2 * size)
  frac = (numerator - lo * 2 * size).astype(jnp.float32) / (2 * size)
  hi = jnp.minimum(lo + 1, length - 1)
  return start + lo, start + hi, frac


def crop_and_resize(image, box, size: int):
  """image (H, W, C), box [y_min, y_max, x_min, x_max] (inclusive, traced ints) -> (size, size, C):
  the crop resized bilinearly, differentiable w.r.t. the image; boxes may differ per call inside
  jit (the output size does not)."""
  y0, y1, fy = _source_taps(box[0], box[1] - box[0] + 1, size)
  x0, x1, fx = _source_taps(box[2], box[3] - box[2] + 1, size)
  top = image[y0] * (1 - fy)[:, None, None] + image[y1] * fy[:, None, None]          # (size, W, C)
  return top[:, x0] * (1 - fx)[None, :, None] + top[:, x1] * fx[None, :, None]


def identity_loss(frames, boxes, has_face, reference_embedding, embed: Callable, face_size: int):
  """mean over the frames with a face of |1 - cos(embed(face crop), reference_embedding)|; 0 when
  no frame has one. frames (F, H, W, 3) in [-1, 1]; reference_embedding (D,)."""
  faces = jax.vmap(crop_and_resize, in_axes=(0, 0, None))(frames, boxes, face_size)
  e = embed(faces).astype(jnp.float32)
  ref = jnp.asarray(reference_embedding, jnp.float32)
  cos = (e @ ref) / jnp.maximum(jnp.linalg.norm(e, axis=-1) * jnp.linalg.norm(ref), 1e-8)
  w = jnp.asarray(has_face, jnp.float32)
  return jnp.sum(w * jnp.abs(1.0 - cos)) / jnp.maximum(jnp.sum(w), 1.0)


def hjb_face_step(x0, learning_rate, *, decode: Callable, embed: Callable, boxes, has_face,
                  reference_embedding, iterations: int, face_size: int = 112,
                  adam_eps: float = 1e-8):
  """One step's face optimization: (refined x0, the loss before each iteration (iterations,)).
  x0 (F, h, w, C) scaled latents of one video; a fresh Adam (torch's defaults) each call.

  Adam divides by |g| + eps per element, so an element whose gradient is about eps (~1e-8) moves
  by an amount that float32 rounding of g changes by percents: two correct implementations agree
  on the loss and the gradient to 1e-6 but on such elements of z only to ~lr * 1e-2."""
  def loss_fn(z):
    frames = jnp.clip(decode(z).astype(jnp.float32), -1.0, 1.0)
    return identity_loss(frames, boxes, has_face, reference_embedding, embed, face_size)

  adam = optax.scale_by_adam(eps=adam_eps)
  z = jnp.asarray(x0, jnp.float32)

  def iteration(carry, _):
    z, state = carry
    loss, grad = jax.value_and_grad(loss_fn)(z)
    direction, state = adam.update(grad, state, z)
    return (z - learning_rate * direction, state), loss

  (z, _), losses = jax.lax.scan(iteration, (z, adam.init(z)), None, length=iterations)
  return z.astype(x0.dtype), losses


def make_refine_x0(config: HJBConfig, num_steps: int, *, decode: Callable, embed: Callable,
                   boxes, has_face, reference_embedding):
  """The sampler's refine_x0 hook (diffusion/samplers.py): x0 (B, F, h, w, C) -> the HJB-refined
  x0 on the configured steps, x0 itself on the others. boxes (B, F, 4) / has_face (B, F) per
  video (or (F, 4) / (F,) shared); reference_embedding (B, D) or (D,)."""
  boxes, has_face = jnp.asarray(boxes, jnp.int32), jnp.asarray(has_face, bool)
  ref = jnp.asarray(reference_embedding, jnp.float32)

  def refine(x0, step_index, key=None):
    del key
    n = x0.shape[0]
    per_video = (jnp.broadcast_to(boxes, (n,) + boxes.shape[-2:]),
                 jnp.broadcast_to(has_face, (n, has_face.shape[-1])),
                 jnp.broadcast_to(ref, (n, ref.shape[-1])))
    lr = config.learning_rate * (1.0 - step_index.astype(jnp.float32) / num_steps)

    def optimize(x0):
      def one(args):
        z, b, f, e = args
        return hjb_face_step(z, lr, decode=decode, embed=embed, boxes=b, has_face=f,
                             reference_embedding=e, iterations=config.iterations,
                             face_size=config.face_size, adam_eps=config.adam_eps)[0]
      return jax.lax.map(one, (x0,) + per_video)      # one video at a time: memory of one

    active = (step_index >= config.first_step) & (step_index <= config.last_step)
    return jax.lax.cond(active, optimize, lambda x: x, x0)

  return refine
