"""The face-window decode (diffusion/hjb_window.py) against the full decode inside the face boxes,
on a tiny random temporal VAE (tests/models/test_svd_vae.py), and its compiled cost."""
import numpy as np
import pytest

import jax
import jax.numpy as jnp

from sem_repa_jax.diffusion import hjb, hjb_window
from sem_repa_jax.models import load_pretrained
from sem_repa_jax.models.svd.vae import TemporalVAE
from tests import parity
from tests.models.test_svd_vae import LATENT, _reference as tiny_vae

FRAMES, SIDE, CHUNK, SCALING, S = 5, 32, 5, 0.18215, 2   # latents (5, 32, 32, 4) -> 64x64 frames
MARGIN = 4
# Measured max |window - full| inside the boxes on this VAE (randomized weights, frames in
# [-3.4, 2.5]): 0.24 at margin 4, 0.53 at 2, 0.14 at 8; windows that follow each face instead of
# one shared place: 2.4. GroupNorm statistics over the whole frame and the mid-block attention
# make the decoder non-local, so no margin makes it 0.
TOLERANCE = 0.3


@pytest.fixture(scope="module")
def decode(tmp_path_factory):
  vae = parity.randomize(tiny_vae(), seed=1, spread=0.3)
  _, vae_dir = parity.round_trip(vae, "svd-vae", tmp_path_factory.mktemp("hjb_window"))
  module, variables = load_pretrained(vae_dir)
  return lambda z: module.apply(variables, z[None] / SCALING, CHUNK, method=TemporalVAE.decode)[0]


def _case(seed=0):
  """A face of 10 to 14 px moving by up to 4 px around (16, 40) of the 64x64 frames."""
  rng = np.random.default_rng(seed)
  x0 = (0.5 * rng.standard_normal((FRAMES, SIDE, SIDE, LATENT))).astype(np.float32)
  boxes = []
  for _ in range(FRAMES):
    (h, w), (dy, dx) = rng.integers(10, 15, 2), rng.integers(-4, 5, 2)
    boxes.append((16 + dy, 15 + dy + h, 40 + dx, 39 + dx + w))
  return x0, np.asarray(boxes, np.int32)


def _windows(boxes, margin, has_face=None, shared=True):
  has_face = np.ones(len(boxes), bool) if has_face is None else has_face
  window = hjb_window.window_size(boxes, has_face, (SIDE, SIDE), S, margin, shared)
  origins, local = hjb_window.face_windows(boxes, has_face, (SIDE, SIDE), S, window, shared)
  return window, np.asarray(origins), np.asarray(local)


def test_windows_hold_their_boxes_with_the_margin():
  _, boxes = _case()
  window, origins, local = _windows(boxes, MARGIN)
  union = boxes[:, 1::2].max(axis=0) // S - boxes[:, 0::2].min(axis=0) // S + 1
  assert window == tuple(int(n) for n in union + 2 * MARGIN)
  assert (origins == origins[0]).all()                     # one place for every frame
  assert (local >= 0).all() and (local[:, 1] < window[0] * S).all()
  assert (local[:, 3] < window[1] * S).all()
  np.testing.assert_array_equal(local[:, 1] - local[:, 0], boxes[:, 1] - boxes[:, 0])
  assert origins[0, 1] == SIDE - window[1]                 # shifted inward at the right edge
  window, origins, local = _windows(boxes, MARGIN, shared=False)   # following each face
  spans = boxes[:, 1::2] // S - boxes[:, 0::2] // S + 1
  assert window == tuple(int(n) for n in spans.max(axis=0) + 2 * MARGIN)
  assert len({tuple(o) for o in origins}) > 1
  np.testing.assert_array_equal(local[:, 1] - local[:, 0], boxes[:, 1] - boxes[:, 0])
  has_face = np.array([True, False, True, True, True])
  window, _, local = _windows(boxes, MARGIN, has_face)     # sized by the frames with a face
  assert local[1].tolist() == [0, window[0] * S - 1, 0, window[1] * S - 1]


def test_window_decode_equals_the_full_decode_inside_the_boxes(decode):
  x0, boxes = _case()
  full = np.asarray(jax.jit(decode)(jnp.asarray(x0)))
  errors = {}
  for margin in (2, MARGIN, 8):
    window, origins, local = _windows(boxes, margin)
    frames = np.asarray(jax.jit(hjb_window.window_decode(decode, origins, window))(x0))
    errors[margin] = hjb_window.max_error_inside_boxes(frames, local, full, boxes)
  window, origins, local = _windows(boxes, MARGIN, shared=False)
  frames = np.asarray(jax.jit(hjb_window.window_decode(decode, origins, window))(x0))
  per_frame = hjb_window.max_error_inside_boxes(frames, local, full, boxes)
  print("max |window - full decode| inside the boxes by margin:",
        {m: f"{e:.1e}" for m, e in errors.items()}, f"per-frame windows at {MARGIN}: "
        f"{per_frame:.1e}; frames in [{full.min():.1f}, {full.max():.1f}]")
  assert errors[MARGIN] <= TOLERANCE
  assert errors[8] < errors[2]
  # Windows that follow the face: the temporal layers mix other places of the frames.
  assert per_frame > 3 * errors[MARGIN]


def test_window_step_is_cheaper_in_the_compiled_program(decode):
  """The HJB step's gradient through the window decode: fewer FLOPs and temporaries than the
  full decode's (XLA's compiled cost and memory analyses; nothing is timed on a shared CPU)."""
  x0, boxes = _case()
  has_face = np.ones(FRAMES, bool)
  window, origins, local = _windows(boxes, MARGIN)
  e_ref = np.random.default_rng(1).standard_normal(16).astype(np.float32)
  embed = lambda faces: faces.reshape(len(faces), 48, 16).mean(axis=1)   # cheap: the decoder counts

  def compiled(dec, b):
    step = jax.jit(lambda z: hjb.hjb_face_step(z, 0.1, decode=dec, embed=embed, boxes=b,
                                               has_face=has_face, reference_embedding=e_ref,
                                               iterations=1, face_size=16)[0])
    return step.lower(jnp.asarray(x0)).compile()

  full = compiled(decode, boxes)
  win = compiled(hjb_window.window_decode(decode, origins, window), local)
  flops = [c.cost_analysis()["flops"] for c in (full, win)]
  temp = [c.memory_analysis().temp_size_in_bytes for c in (full, win)]
  area = window[0] * window[1] / SIDE ** 2
  print(f"window {window} of {SIDE}x{SIDE} latents ({area:.0%}): FLOPs {flops[1] / flops[0]:.2f}x, "
        f"temporaries {temp[1] / temp[0]:.2f}x of the full decode's step")
  assert flops[1] < 0.8 * flops[0] and temp[1] < 0.8 * temp[0]
