"""Face detection for ArcFace crops: a detector interface, SCRFD on onnxruntime (antelopev2's
scrfd_10g_bnkps.onnx, buffalo_l's det_10g.onnx) for users who have the file, and user-given boxes.

Images are RGB uint8 (H, W, 3). A frame without a face yields an empty `Detections`, and the
helpers that need one face raise `NoFaceFound` or return `present=False` (face_embed.py keeps,
crops and embeds the faces): never a zero embedding.
The decoding follows insightface's model_zoo/scrfd.py: per stride (8, 16, 32, and 64, 128 for
5-level models) a grid of anchor centers (x, y) * stride, `num_anchors` per cell, box distances
(left, top, right, bottom) and landmark offsets in units of the stride, score threshold, then
greedy NMS at IoU 0.4 with insightface's +1 pixel area convention.
"""
import dataclasses
import os
from typing import Optional, Protocol, Sequence

import numpy as np


class NoFaceFound(ValueError):
  """An image in which a face was required but none was detected."""


@dataclasses.dataclass
class Detections:
  boxes: np.ndarray                 # (N, 4) x1, y1, x2, y2 in image pixels
  scores: np.ndarray                # (N,)
  landmarks: Optional[np.ndarray]   # (N, 5, 2) (x, y), or None for detectors without them

  def __len__(self):
    return len(self.scores)

  def best(self, image_shape=None, metric: str = "default") -> int:
    """Index of the face to keep (insightface's max_num=1 rule): the largest box, penalized by its
    distance to the image center unless metric='max'."""
    if len(self) == 0:
      raise NoFaceFound("no face detected")
    area = (self.boxes[:, 2] - self.boxes[:, 0]) * (self.boxes[:, 3] - self.boxes[:, 1])
    if image_shape is None or metric == "max":
      return int(np.argmax(area))
    cy, cx = image_shape[0] // 2, image_shape[1] // 2
    off = ((self.boxes[:, 0] + self.boxes[:, 2]) / 2 - cx) ** 2 + \
        ((self.boxes[:, 1] + self.boxes[:, 3]) / 2 - cy) ** 2
    return int(np.argmax(area - 2.0 * off))


class FaceDetector(Protocol):
  def detect(self, image: np.ndarray) -> Detections: ...


class GivenFaces:
  """A detector over faces the user already has (per-frame boxes, optionally landmarks).

  boxes: sequence over frames of (4,) arrays or None (no face in that frame). `detect` returns the
  next frame's face on each call (or frame `index`), ignoring the image.
  """

  def __init__(self, boxes: Sequence, landmarks: Optional[Sequence] = None):
    self.boxes, self.landmarks, self._i = list(boxes), landmarks, 0

  def detect(self, image=None, index: Optional[int] = None) -> Detections:
    i = self._i if index is None else index
    self._i = i + 1
    if i >= len(self.boxes):
      raise IndexError(f"GivenFaces: frame {i} requested, but boxes were given for "
                       f"{len(self.boxes)} frames")
    box = self.boxes[i]
    if box is None:
      return Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), None)
    kps = None if self.landmarks is None or self.landmarks[i] is None else \
        np.asarray(self.landmarks[i], np.float32).reshape(1, 5, 2)
    return Detections(np.asarray(box, np.float32).reshape(1, 4), np.ones(1, np.float32), kps)


def anchor_centers(height: int, width: int, stride: int, num_anchors: int) -> np.ndarray:
  """(height * width * num_anchors, 2) (x, y) centers, row-major, each repeated num_anchors times."""
  ys, xs = np.mgrid[:height, :width]
  centers = (np.stack([xs, ys], -1).astype(np.float32) * stride).reshape(-1, 2)
  return np.repeat(centers, num_anchors, axis=0)


def distance2bbox(points, distance):
  return np.stack([points[:, 0] - distance[:, 0], points[:, 1] - distance[:, 1],
                   points[:, 0] + distance[:, 2], points[:, 1] + distance[:, 3]], -1)


def distance2kps(points, distance):
  """distance (N, 2K) offsets (dx, dy) per landmark -> (N, K, 2)."""
  d = distance.reshape(distance.shape[0], distance.shape[1] // 2, 2)
  return points[:, None, :] + d


def nms(boxes, scores, threshold: float) -> np.ndarray:
  """Greedy NMS in descending score order; indices kept (insightface: areas with +1 pixel)."""
  x1, y1, x2, y2 = boxes.T
  areas = (x2 - x1 + 1) * (y2 - y1 + 1)
  order = np.argsort(-scores, kind="stable")
  keep = []
  while order.size:
    i = order[0]
    keep.append(i)
    w = np.maximum(0.0, np.minimum(x2[i], x2[order[1:]]) - np.maximum(x1[i], x1[order[1:]]) + 1)
    h = np.maximum(0.0, np.minimum(y2[i], y2[order[1:]]) - np.maximum(y1[i], y1[order[1:]]) + 1)
    inter = w * h
    iou = inter / (areas[i] + areas[order[1:]] - inter)
    order = order[1:][iou <= threshold]
  return np.asarray(keep, np.int64)


def decode(outputs: Sequence[np.ndarray], input_hw, strides=(8, 16, 32), num_anchors: int = 2,
           threshold: float = 0.5, nms_threshold: float = 0.4) -> Detections:
  """SCRFD raw outputs (scores per stride, then boxes, then optionally landmarks, as the ONNX file
  orders them) at the network's input resolution -> Detections in input pixels after NMS."""
  n = len(strides)
  if len(outputs) not in (2 * n, 3 * n):
    raise ValueError(f"SCRFD: {len(outputs)} outputs for {n} strides; expected {2 * n} or {3 * n}")
  use_kps = len(outputs) == 3 * n
  outs = [np.asarray(o, np.float32) for o in outputs]
  outs = [o[0] if o.ndim == 3 else o for o in outs]   # some exports keep a batch axis of 1
  scores_l, boxes_l, kps_l = [], [], []
  for k, stride in enumerate(strides):
    h, w = input_hw[0] // stride, input_hw[1] // stride
    centers = anchor_centers(h, w, stride, num_anchors)
    scores = outs[k].reshape(-1)
    if scores.size != len(centers):
      raise ValueError(f"SCRFD stride {stride}: {scores.size} scores for {len(centers)} anchors "
                       f"of a {input_hw} input ({num_anchors} per cell)")
    pos = np.nonzero(scores >= threshold)[0]
    scores_l.append(scores[pos])
    boxes_l.append(distance2bbox(centers[pos], outs[k + n].reshape(-1, 4)[pos] * stride))
    if use_kps:
      kps_l.append(distance2kps(centers[pos], outs[k + 2 * n].reshape(len(centers), -1)[pos]
                                * stride))
  scores = np.concatenate(scores_l)
  boxes = np.concatenate(boxes_l).astype(np.float32)
  kps = np.concatenate(kps_l).astype(np.float32) if use_kps else None
  keep = nms(boxes, scores, nms_threshold)
  return Detections(boxes[keep], scores[keep], None if kps is None else kps[keep])


def onnx_session(model_file: str, providers: Optional[Sequence[str]], missing: str):
  """An onnxruntime session of `model_file` (CPU unless `providers` says otherwise); a missing
  file raises FileNotFoundError("<model_file>: <missing>")."""
  import onnxruntime
  if not os.path.isfile(model_file):
    raise FileNotFoundError(f"{model_file}: {missing}")
  return onnxruntime.InferenceSession(model_file,
                                      providers=list(providers or ["CPUExecutionProvider"]))


class SCRFD:
  """SCRFD detector on onnxruntime. input_size (width, height) for files with a dynamic input."""

  def __init__(self, model_file: str, input_size=(640, 640), nms_threshold: float = 0.4,
               providers: Optional[Sequence[str]] = None):
    self.session = onnx_session(
        model_file, providers, "no SCRFD model file (antelopev2/scrfd_10g_bnkps.onnx or "
        "buffalo_l/det_10g.onnx); or give face boxes with GivenFaces")
    inp = self.session.get_inputs()[0]
    self.input_name = inp.name
    shape = inp.shape
    self.input_size = tuple(input_size) if isinstance(shape[2], str) or shape[2] is None else \
        (int(shape[3]), int(shape[2]))
    self.output_names = [o.name for o in self.session.get_outputs()]
    layout = {6: ((8, 16, 32), 2), 9: ((8, 16, 32), 2), 10: ((8, 16, 32, 64, 128), 1),
              15: ((8, 16, 32, 64, 128), 1)}
    if len(self.output_names) not in layout:
      raise ValueError(f"{model_file}: {len(self.output_names)} outputs; an SCRFD file has 6, 9, "
                       "10 or 15")
    self.strides, self.num_anchors = layout[len(self.output_names)]
    self.nms_threshold = nms_threshold

  def detect(self, image: np.ndarray, threshold: float = 0.5) -> Detections:
    """image: RGB uint8 (H, W, 3) -> Detections in image pixels."""
    import cv2
    if image.ndim != 3 or image.shape[2] != 3:
      raise ValueError(f"SCRFD.detect: image of shape {image.shape}, expected (H, W, 3) RGB")
    width, height = self.input_size
    # Letterbox: keep the aspect ratio, pad right/bottom with black (insightface detect()).
    if image.shape[0] / image.shape[1] > height / width:
      new_h, new_w = height, int(height / (image.shape[0] / image.shape[1]))
    else:
      new_w, new_h = width, int(width * (image.shape[0] / image.shape[1]))
    scale = new_h / image.shape[0]
    canvas = np.zeros((height, width, 3), np.uint8)
    canvas[:new_h, :new_w] = cv2.resize(np.ascontiguousarray(image), (new_w, new_h))
    # insightface passes BGR with swapRB=True, so the network sees RGB, (x - 127.5) / 128.
    blob = ((canvas.astype(np.float32) - 127.5) / 128.0).transpose(2, 0, 1)[None]
    outs = self.session.run(self.output_names, {self.input_name: blob})
    det = decode(outs, (height, width), self.strides, self.num_anchors, threshold,
                 self.nms_threshold)
    det.boxes /= scale
    if det.landmarks is not None:
      det.landmarks /= scale
    return det
