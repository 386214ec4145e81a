"""Adapters from converted models (`load_pretrained` folders) to the annotator's teacher callables.

They follow the public model interface of docs/architecture.md: the CogVideoX VAE's
`apply(v, video (B,F,H,W,3), method='encode') -> (mean, logvar)` and ArcFace's
`apply(v, faces (B,112,112,3) in [-1,1]) -> (B,512)`.
"""
import numpy as np


def vae_encoder(model_dir: str, scaling_factor: float):
  """encode_video(video (F,H,W,3) in [-1,1]) -> scaling_factor * posterior mean (f,h,w,c).

  The mean (mode) is cached, not a sample, so records do not depend on a sampling seed.
  """
  import jax
  from sem_repa_jax.models import load_pretrained
  module, variables = load_pretrained(model_dir)
  encode = jax.jit(lambda v, x: module.apply(v, x, method="encode")[0])

  def encode_video(video):
    mean = encode(variables, np.asarray(video, np.float32)[None])
    return np.asarray(mean[0], np.float32) * scaling_factor
  return encode_video


def crop_faces(frames: np.ndarray, boxes: np.ndarray, size: int = 112) -> np.ndarray:
  """Square crops around xyxy boxes (side = the longer box side), resized to size, in [-1, 1]."""
  import cv2
  out = np.zeros((len(frames), size, size, 3), np.float32)
  h, w = frames.shape[1:3]
  for i, (fr, b) in enumerate(zip(frames, np.asarray(boxes, np.float32))):
    cx, cy, s = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2, max(b[2] - b[0], b[3] - b[1], 1.0)
    x0, y0 = int(round(cx - s / 2)), int(round(cy - s / 2))
    x1, y1 = x0 + int(round(s)), y0 + int(round(s))
    pad = np.zeros((y1 - y0, x1 - x0, 3), np.uint8)
    sy0, sx0, sy1, sx1 = max(0, y0), max(0, x0), min(h, y1), min(w, x1)
    if sy1 > sy0 and sx1 > sx0:
      pad[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = fr[sy0:sy1, sx0:sx1]
    out[i] = cv2.resize(pad, (size, size), interpolation=cv2.INTER_AREA) / 127.5 - 1.0
  return out


def arcface_embedder(model_dir: str, batch_size: int = 64):
  """embed_faces(frames, boxes) -> (embeds (F,512), present (F,)) with a converted ArcFace."""
  import jax
  from sem_repa_jax.models import load_pretrained
  module, variables = load_pretrained(model_dir)
  apply = jax.jit(module.apply)

  def embed_faces(frames, boxes):
    crops = crop_faces(frames, boxes)
    embeds = np.concatenate([np.asarray(apply(variables, crops[i:i + batch_size]))
                             for i in range(0, len(crops), batch_size)])
    valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return embeds.astype(np.float32), valid
  return embed_faces
