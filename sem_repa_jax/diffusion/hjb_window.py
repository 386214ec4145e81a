"""The HJB face step's decode restricted to a latent window around each frame's face box (a
prototype; diffusion/hjb.py decodes every frame whole).

The identity loss reads only the face boxes of the decoded frames, so the decoder need only see
a window of latents around each box plus its receptive-field margin. Per frame a window of one
static size (window_size: the largest face box over the frames, in latents, plus `margin` latents
on each side) is cut out of the latents at the box (clamped to the frame), all frames' windows are
decoded together as one video, and the boxes are moved into window coordinates:

  window = window_size(boxes, has_face, latent_hw, compression, margin)       # host, static
  origins, local_boxes = face_windows(boxes, has_face, latent_hw, compression, window)
  hjb_face_step(x0, lr, decode=window_decode(decode, origins, window), boxes=local_boxes, ...)

shared=True (the default) places every frame's window at the same place, around the union of the
boxes: the decoder's temporal layers mix the frames at each position, and windows that follow a
moving face would mix different places of the frames than the full decode does (measured: the
error inside the boxes then stays at the size of the frames' values whatever the margin).
shared=False follows each frame's box (smaller windows where faces move). Neither is exact: the
decoder's GroupNorms take statistics over the whole frame and its mid-block attention attends
over all positions, so inside the boxes the window decode differs from the full one by an amount
that falls with the margin (docs/benchmarks.md).
"""
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np


def _latent_spans(boxes, has_face, compression: int, shared: bool, xp):
  """(lo, hi) (F, 2) inclusive latent [row, col] ranges of the boxes; shared: every frame's is
  the union over the frames with a face."""
  b = xp.asarray(boxes).astype(np.int32)
  lo, hi = b[:, 0::2] // compression, b[:, 1::2] // compression
  if shared:
    face = xp.asarray(has_face, bool)[:, None]
    big = np.iinfo(np.int32).max
    lo = xp.broadcast_to(xp.min(xp.where(face, lo, big), axis=0), lo.shape)
    hi = xp.broadcast_to(xp.max(xp.where(face, hi, -1), axis=0), hi.shape)
  return lo, hi


def window_size(boxes, has_face, latent_hw, compression: int, margin: int,
                shared: bool = True) -> tuple:
  """(rows, cols) in latents, static: the largest span of latents a face box touches over the
  frames with a face (shared: of their union), plus 2 * margin, at most the latent frame.
  boxes (F, 4) inclusive pixels [y_min, y_max, x_min, x_max] on the host (hjb.mask_boxes)."""
  if margin < 0:
    raise ValueError(f"window margin {margin}: expected >= 0 latents")
  face = np.asarray(has_face, bool)
  if not face.any():
    return tuple(int(n) for n in latent_hw)
  lo, hi = _latent_spans(boxes, face, compression, shared, np)
  rows, cols = (hi - lo + 1)[face].max(axis=0) + 2 * margin
  return min(int(rows), int(latent_hw[0])), min(int(cols), int(latent_hw[1]))


def face_windows(boxes, has_face, latent_hw, compression: int, window, shared: bool = True):
  """(origins (F, 2) int32 latent [row, col] of each frame's window, boxes (F, 4) in the decoded
  window's pixels). The box's latents (shared: the union's) sit in the middle of the window (the
  spare latents split evenly, the odd one after), shifted inward at the frame's edges. A frame
  without a face gets the whole window as its box (it leaves the loss anyway). Traceable."""
  b = jnp.asarray(boxes, jnp.int32)
  lo, hi = _latent_spans(b, has_face, compression, shared, jnp)
  size = jnp.asarray(window, jnp.int32)
  limit = jnp.asarray(latent_hw, jnp.int32) - size
  origins = jnp.clip(lo - (size - (hi - lo + 1)) // 2, 0, limit)
  shift = jnp.repeat(origins * compression, 2, axis=1)                    # y, y, x, x
  whole = jnp.array([0, window[0] * compression - 1, 0, window[1] * compression - 1], jnp.int32)
  local = jnp.where(jnp.asarray(has_face, bool)[:, None], b - shift, whole)
  return origins, local


def gather_windows(latents, origins, window):
  """latents (F, h, w, C), origins (F, 2) -> (F, rows, cols, C): each frame's window."""
  def one(frame, origin):
    return jax.lax.dynamic_slice(frame, (origin[0], origin[1], 0),
                                 (window[0], window[1], frame.shape[-1]))
  return jax.vmap(one)(latents, origins)


def window_decode(decode: Callable, origins, window) -> Callable:
  """decode(z (F, h, w, C)) -> frames, restricted: z -> decode of each frame's window together,
  (F, rows * s, cols * s, 3) for the VAE's compression s."""
  return lambda z: decode(gather_windows(z, origins, window))


def max_error_inside_boxes(window_frames, local_boxes, frames, boxes) -> float:
  """max |window decode - full decode| over the face boxes of the frames (host arrays): how far
  the window decode is from the exact one where the identity loss reads it."""
  w, f = np.asarray(window_frames), np.asarray(frames)
  return float(max(np.abs(w[k, a:b + 1, c:d + 1] - f[k, y0:y1 + 1, x0:x1 + 1]).max()
                   for k, ((a, b, c, d), (y0, y1, x0, x1))
                   in enumerate(zip(np.asarray(local_boxes), np.asarray(boxes)))))
