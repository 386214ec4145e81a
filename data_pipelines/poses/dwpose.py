"""The DWPose teacher on onnxruntime: person boxes (YOLOX-L, `yolox_l.onnx`), then top-down
whole-body keypoints (RTMPose/DWPose-L with SimCC heads, `dw-ll_ucoco_384.onnx`), converted to
the shared format (keypoints.py: 18 OpenPose body points, 2 x 21 hands, 68 face points, scores).

It follows the official StableAnimator/MimicMotion DWPose code step by step:
- detection: letterbox into 640x640 (scale to fit, top-left, pad value 114, RGB as given, no
  normalization), YOLOX grid decoding (strides 8/16/32: centers (offset + cell) * stride, sizes
  exp(.) * stride), score = objectness * class score, NMS at IoU 0.45 over scores > 0.1, then the
  person boxes (class 0) scoring > 0.3. No box: the whole image is the box.
- pose: the box's center and 1.25 x its size, widened to the model's aspect (288:384), an affine
  warp into 288x384, (RGB - mean) / std, SimCC decoding (argmax of simcc_x and simcc_y over bins,
  divided by the split ratio 2; score = the smaller of the two maxima; no positive maximum: the
  location is -1), back to image pixels.
- COCO-WholeBody (133) -> OpenPose: neck = mean of the shoulders with score 1 when both shoulders
  score > 0.3 (else 0), the body reordered to OpenPose's order; face = points 23..90, hands =
  91..111 (left) and 112..132 (right); coordinates divided by the image width and height.
The official code keeps every person (its alignment uses the first, the highest-scoring box); the
shared format holds one person per frame: the highest-scoring box (`person='score'`, the
official choice) or the largest one (`person='largest'`). Scores below 0 are stored as 0.
"""
import dataclasses
from typing import Optional, Sequence

import numpy as np

from data_pipelines.poses.keypoints import PoseKeypoints
from sem_repa_jax.models.encoders.face_detect import nms, onnx_session

DETECTOR_FILE, POSE_FILE = "yolox_l.onnx", "dw-ll_ucoco_384.onnx"
WHERE = ("the DWPose release (https://huggingface.co/yzd-v/DWPose) or StableAnimator's "
         "checkpoints (https://huggingface.co/FrancisRing/StableAnimator, DWPose/); see "
         "docs/poses.md")
YOLOX_STRIDES = (8, 16, 32)
YOLOX_PAD = 114
RTMPOSE_MEAN = np.array([123.675, 116.28, 103.53])
RTMPOSE_STD = np.array([58.395, 57.12, 57.375])
BOX_PADDING = 1.25
SIMCC_SPLIT_RATIO = 2.0
NECK_SHOULDER_THRESHOLD = 0.3
# OpenPose point i <- COCO-WholeBody point OPENPOSE_FROM_COCO[i], the neck (17) appended to the
# 17 COCO body points first.
OPENPOSE_FROM_COCO = (0, 17, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3)
FACE, LEFT_HAND, RIGHT_HAND = slice(23, 91), slice(91, 112), slice(112, 133)


@dataclasses.dataclass(frozen=True)
class Persons:
  boxes: np.ndarray    # (N, 4) x1, y1, x2, y2 in image pixels, best score first
  scores: np.ndarray   # (N,)


# ---- detection (YOLOX) ----

def letterbox(image: np.ndarray, size=(640, 640)):
  """RGB uint8 (H, W, 3) -> ((1, 3, h, w) float32 in 0..255, ratio): scaled to fit `size` (h, w),
  top-left, the rest YOLOX_PAD."""
  import cv2
  r = min(size[0] / image.shape[0], size[1] / image.shape[1])
  nh, nw = int(image.shape[0] * r), int(image.shape[1] * r)
  canvas = np.full((size[0], size[1], 3), YOLOX_PAD, np.uint8)
  canvas[:nh, :nw] = cv2.resize(np.ascontiguousarray(image), (nw, nh),
                                interpolation=cv2.INTER_LINEAR)
  return canvas.transpose(2, 0, 1)[None].astype(np.float32), r


def yolox_grid(input_hw, strides=YOLOX_STRIDES):
  """(N, 2) cell (x, y) and (N, 1) stride of every YOLOX prediction, strides in order, row-major."""
  cells, steps = [], []
  for s in strides:
    ys, xs = np.mgrid[:input_hw[0] // s, :input_hw[1] // s]
    cells.append(np.stack([xs, ys], -1).reshape(-1, 2))
    steps.append(np.full((cells[-1].shape[0], 1), s))
  return np.concatenate(cells).astype(np.float32), np.concatenate(steps).astype(np.float32)


def decode_yolox(output: np.ndarray, input_hw=(640, 640), ratio: float = 1.0,
                 nms_threshold: float = 0.45, candidate_threshold: float = 0.1,
                 threshold: float = 0.3) -> Persons:
  """YOLOX raw output (1, N, 5 + classes) -> person boxes in image pixels (input / ratio)."""
  pred = np.asarray(output, np.float32).reshape(-1, output.shape[-1])
  cells, steps = yolox_grid(input_hw)
  if len(pred) != len(cells):
    raise ValueError(f"YOLOX: {len(pred)} predictions for a {input_hw} input; expected "
                     f"{len(cells)} (strides {YOLOX_STRIDES})")
  center = (pred[:, :2] + cells) * steps
  half = np.exp(pred[:, 2:4]) * steps / 2
  boxes = np.concatenate([center - half, center + half], 1) / ratio
  scores = pred[:, 4] * pred[:, 5]     # class 0: person
  cand = np.nonzero(scores > candidate_threshold)[0]
  keep = cand[nms(boxes[cand], scores[cand], nms_threshold)]
  keep = keep[scores[keep] > threshold]
  return Persons(boxes[keep], scores[keep])


# ---- top-down pose (RTMPose SimCC) ----

def box_center_scale(box, padding: float = BOX_PADDING, aspect: float = 288 / 384):
  """xyxy box -> (center (2,), scale (2,) = padded size widened or heightened to w / h = aspect)."""
  x1, y1, x2, y2 = np.asarray(box, np.float64)
  center = np.array([x1 + x2, y1 + y2]) * 0.5
  w, h = (x2 - x1) * padding, (y2 - y1) * padding
  scale = np.array([w, w / aspect]) if w > h * aspect else np.array([h * aspect, h])
  return center, scale


def _third_point(a, b):
  """b + (a - b) turned 90 degrees anticlockwise: the third point of an affine pair set."""
  d = a - b
  return b + np.array([-d[1], d[0]], a.dtype)


def crop_matrix(center, scale, output_wh) -> np.ndarray:
  """2x3 affine of the box (center, scale) onto an output_wh image (no rotation), from three point
  pairs (the center, the top middle, their third point) in float32, as mmpose computes it."""
  import cv2
  src = np.zeros((3, 2), np.float32)
  src[0], src[1] = center, center + [0.0, -scale[0] * 0.5]
  src[2] = _third_point(src[0], src[1])
  dst = np.zeros((3, 2), np.float32)
  dst[0] = [output_wh[0] * 0.5, output_wh[1] * 0.5]
  dst[1] = dst[0] + [0.0, -output_wh[0] * 0.5]
  dst[2] = _third_point(dst[0], dst[1])
  return cv2.getAffineTransform(src, dst)


def crop_person(image: np.ndarray, box, input_wh=(288, 384)):
  """image RGB uint8 -> ((1, 3, h, w) float32 normalized crop, center, scale)."""
  import cv2
  center, scale = box_center_scale(box, aspect=input_wh[0] / input_wh[1])
  crop = cv2.warpAffine(image, crop_matrix(center, scale, input_wh), tuple(int(v) for v in input_wh),
                        flags=cv2.INTER_LINEAR)
  crop = (crop - RTMPOSE_MEAN) / RTMPOSE_STD
  return crop.transpose(2, 0, 1)[None].astype(np.float32), center, scale


def decode_simcc(simcc_x: np.ndarray, simcc_y: np.ndarray,
                 split_ratio: float = SIMCC_SPLIT_RATIO):
  """(N, K, Wx), (N, K, Wy) -> (locations (N, K, 2) in input pixels, scores (N, K)): the argmax
  bin of each axis / split_ratio; score = the smaller maximum; -1 where it is not positive."""
  locs = np.stack([np.argmax(simcc_x, -1), np.argmax(simcc_y, -1)], -1).astype(np.float32)
  vals = np.minimum(np.max(simcc_x, -1), np.max(simcc_y, -1))
  locs[vals <= 0] = -1
  return locs / split_ratio, vals


def to_image(locs, center, scale, input_wh):
  """SimCC locations in the crop -> image pixels."""
  return locs / np.asarray(input_wh, np.float64) * scale + center - scale / 2


def to_openpose(points: np.ndarray, scores: np.ndarray, height: int, width: int) -> PoseKeypoints:
  """One person's 133 COCO-WholeBody points (pixels) and scores -> PoseKeypoints (normalized)."""
  points = np.asarray(points, np.float64)
  neck = points[[5, 6]].mean(0) / [width, height]    # averaged in pixels, as the official code
  points = points / [width, height]
  scores = np.maximum(np.asarray(scores, np.float64), 0.0)
  neck_score = float(np.all(scores[[5, 6]] > NECK_SHOULDER_THRESHOLD))
  body = np.concatenate([points[:17], neck[None]])[list(OPENPOSE_FROM_COCO)]
  body_scores = np.append(scores[:17], neck_score)[list(OPENPOSE_FROM_COCO)]
  return PoseKeypoints(body, body_scores, np.stack([points[LEFT_HAND], points[RIGHT_HAND]]),
                       np.stack([scores[LEFT_HAND], scores[RIGHT_HAND]]), points[FACE],
                       scores[FACE], image_size=(height, width))


def select_person(persons: Persons, image_hw, rule: str = "score") -> np.ndarray:
  """The box to keep: the best-scoring one ('score', the official choice) or the largest; the whole
  image when there is none (as the official code)."""
  if len(persons.boxes) == 0:
    return np.array([0.0, 0.0, image_hw[1], image_hw[0]])
  if rule == "score":
    return persons.boxes[int(np.argmax(persons.scores))]
  if rule == "largest":
    b = persons.boxes
    return b[int(np.argmax((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])))]
  raise ValueError(f"DWPose person rule {rule!r}: expected 'score' or 'largest'")


class DWPose:
  """The teacher: `dwpose(image RGB uint8 (H, W, 3)) -> PoseKeypoints` of one frame."""

  def __init__(self, detector_file: str, pose_file: str, person: str = "score",
               providers: Optional[Sequence[str]] = None):
    if person not in ("score", "largest"):
      raise ValueError(f"DWPose person rule {person!r}: expected 'score' or 'largest'")
    self.person = person
    self.det = onnx_session(detector_file, providers, f"no YOLOX person detector; get "
                            f"{DETECTOR_FILE} from {WHERE}")
    self.pose = onnx_session(pose_file, providers, f"no DWPose whole-body model; get {POSE_FILE} "
                             f"from {WHERE}")
    self.det_hw = self._input_hw(self.det, detector_file, (640, 640))
    h, w = self._input_hw(self.pose, pose_file, (384, 288))
    self.pose_wh = (w, h)
    names = [o.name for o in self.pose.get_outputs()]
    if len(names) != 2:
      raise ValueError(f"{pose_file}: {len(names)} outputs {names}; a DWPose/RTMPose file has 2 "
                       "(simcc_x, simcc_y)")
    self.simcc_names = ["simcc_x", "simcc_y"] if set(names) == {"simcc_x", "simcc_y"} else names

  @staticmethod
  def _input_hw(session, path, default):
    shape = session.get_inputs()[0].shape
    if len(shape) != 4:
      raise ValueError(f"{path}: input of shape {shape}; expected (1, 3, H, W)")
    dynamic = any(not isinstance(v, int) for v in shape[2:])
    return default if dynamic else (int(shape[2]), int(shape[3]))

  def detect(self, image: np.ndarray) -> Persons:
    blob, ratio = letterbox(image, self.det_hw)
    out = self.det.run(None, {self.det.get_inputs()[0].name: blob})[0]
    return decode_yolox(out, self.det_hw, ratio)

  def estimate(self, image: np.ndarray, box):
    """One person's 133 whole-body points (image pixels) and scores in `box`."""
    blob, center, scale = crop_person(image, box, self.pose_wh)
    sx, sy = self.pose.run(self.simcc_names, {self.pose.get_inputs()[0].name: blob})
    locs, vals = decode_simcc(sx, sy)
    return to_image(locs[0], center, scale, self.pose_wh), vals[0]

  def __call__(self, image: np.ndarray) -> PoseKeypoints:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
      raise ValueError(f"DWPose: image of shape {image.shape} {image.dtype}; expected (H, W, 3) "
                       "RGB uint8")
    box = select_person(self.detect(image), image.shape[:2], self.person)
    points, scores = self.estimate(image, box)
    return to_openpose(points, scores, *image.shape[:2])
