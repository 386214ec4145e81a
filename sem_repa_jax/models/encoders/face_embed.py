"""The one face path to ArcFace, shared by training targets (the annotator's ArcFace teacher) and
metrics (eval/identity.py): detect (the kept face of each frame), crop, embed.

How a face is cut out is a setting, `crop`:
  "landmarks"  5-point similarity alignment to the ArcFace template (insightface's norm_crop) where
               the face has landmarks, else as "box": what ArcFace was trained on.
  "box"        the box, rounded and clipped to the image, cut and resized bilinearly (as
               StableAnimator's face crops; face_align.crop_resize).
  "square"     a square around the box center, side = the longer box side, black outside the image,
               area-resampled (cv2 INTER_AREA): the annotator's crop of boxes without landmarks.
Crops are float32 (N, size, size, 3) in [-1, 1]. A frame without a face has present=False and an
all-zero crop that callers skip, never score as a zero embedding.
"""
import dataclasses
from typing import Optional

import numpy as np

from sem_repa_jax.models.encoders.face_detect import FaceDetector

CROPS = ("landmarks", "box", "square")


@dataclasses.dataclass
class FaceTrack:
  """The kept face of each frame of a video."""
  boxes: np.ndarray                  # (N, 4) float x1, y1, x2, y2 image pixels; zeros where absent
  present: np.ndarray                # (N,) bool
  landmarks: Optional[np.ndarray] = None   # (N, 5, 2) (x, y); NaN rows for faces without them

  def __len__(self):
    return len(self.present)


def track_faces(frames, detector: FaceDetector) -> FaceTrack:
  """Detects every frame (RGB uint8 (N, H, W, 3)) and keeps `Detections.best` of each."""
  n = len(frames)
  boxes, present = np.zeros((n, 4)), np.zeros(n, bool)
  landmarks = np.full((n, 5, 2), np.nan)
  for i, frame in enumerate(frames):
    det = detector.detect(frame)
    if len(det) == 0:
      continue
    j = det.best(np.shape(frame))
    boxes[i], present[i] = det.boxes[j], True
    if det.landmarks is not None:
      landmarks[i] = det.landmarks[j]
  return FaceTrack(boxes, present, None if np.isnan(landmarks).all() else landmarks)


def _square_crop(frame, box, size: int) -> np.ndarray:
  """uint8 (size, size, 3): the square of side max(box w, box h, 1) centered on the box."""
  import cv2
  b = np.asarray(box, np.float32)
  h, w = frame.shape[:2]
  cx, cy, s = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2, max(b[2] - b[0], b[3] - b[1], 1.0)
  x0, y0 = int(round(cx - s / 2)), int(round(cy - s / 2))
  x1, y1 = x0 + int(round(s)), y0 + int(round(s))
  pad = np.zeros((y1 - y0, x1 - x0, 3), np.uint8)
  sy0, sx0, sy1, sx1 = max(0, y0), max(0, x0), min(h, y1), min(w, x1)
  if sy1 > sy0 and sx1 > sx0:
    pad[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = frame[sy0:sy1, sx0:sx1]
  return cv2.resize(pad, (size, size), interpolation=cv2.INTER_AREA)


def crop_face(frame, box, landmarks=None, crop: str = "landmarks", size: int = 112) -> np.ndarray:
  """The ArcFace input (size, size, 3) float32 in [-1, 1] of one face of an RGB uint8 frame."""
  if crop not in CROPS:
    raise ValueError(f"face crop {crop!r}: expected one of {CROPS}")
  if crop == "square":
    return (_square_crop(frame, box, size) / 127.5 - 1.0).astype(np.float32)
  from sem_repa_jax.models.encoders import face_align   # jax, only for the warps
  pixels = np.asarray(frame, np.float32)[None]
  if crop == "landmarks" and landmarks is not None and not np.isnan(landmarks).any():
    out = face_align.norm_crop(pixels, np.asarray(landmarks, np.float64)[None], size)
  else:
    b = np.round(box).astype(np.int32)
    b[[0, 2]] = np.clip(b[[0, 2]], 0, frame.shape[1])
    b[[1, 3]] = np.clip(b[[1, 3]], 0, frame.shape[0])
    out = face_align.crop_resize(pixels, b[None], size)
  return (np.asarray(out[0]) - 127.5) / 127.5


def crop_faces(frames, track: FaceTrack, crop: str = "landmarks", size: int = 112):
  """(crops (N, size, size, 3) float32 in [-1, 1], present (N,) bool) of a track's faces."""
  if len(track) != len(frames):
    raise ValueError(f"crop_faces: a face track of {len(track)} frames for {len(frames)} frames")
  crops = np.zeros((len(frames), size, size, 3), np.float32)
  for i in np.flatnonzero(track.present):
    lmk = None if track.landmarks is None else track.landmarks[i]
    crops[i] = crop_face(frames[i], track.boxes[i], lmk, crop, size)
  return crops, np.asarray(track.present, bool).copy()


def aligned_faces(frames, detector: FaceDetector, crop: str = "landmarks", size: int = 112):
  """Detect and crop: (crops (N, size, size, 3), present (N,)) of RGB uint8 frames (N, H, W, 3)."""
  frames = np.asarray(frames)
  return crop_faces(frames, track_faces(frames, detector), crop, size)


def _jitted_apply(module, variables, x):
  import jax
  global _JIT_APPLY
  if _JIT_APPLY is None:
    # Modules are hashable dataclasses: one compile per (module, shape), reused across calls.
    _JIT_APPLY = jax.jit(lambda m, v, x: m.apply(v, x), static_argnums=0)
  return _JIT_APPLY(module, variables, x)


_JIT_APPLY = None


def embed(module, variables, crops, batch_size: int = 32):
  """ArcFace embeddings (N, D) of crops (N, 112, 112, 3) in [-1, 1], in fixed-size jitted batches
  (the last one padded) so a video compiles once."""
  import jax.numpy as jnp
  crops = np.asarray(crops, np.float32)
  out = []
  for s in range(0, len(crops), batch_size):
    chunk = crops[s:s + batch_size]
    pad = batch_size - len(chunk)
    if pad and len(crops) > batch_size:
      chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)])
    out.append(np.asarray(_jitted_apply(module, variables, jnp.asarray(chunk)))
               [:len(crops[s:s + batch_size])])
  return np.concatenate(out) if out else np.zeros((0, module.config.num_features), np.float32)
