"""Skeleton images from keypoints, drawn as StableAnimator and MimicMotion draw DWPose output.

On a black canvas of the reference size (the shorter side `ref_short` = 2160 pixels; the frame
size when None):
- body: the first 17 OpenPose limbs (keypoints.BODY_LIMBS) whose two ends score >= 0.3, each an
  ellipse polygon (cv2.ellipse2Poly: center the truncated mid-point, half-axes (int(length / 2),
  stick width 4), whole-degree angle) filled with the limb's color times the two scores; then the
  canvas times 0.6; then the joints scoring > 0.3 as filled circles of radius 4 in their color
  times the score;
- hands: each of the 20 edges a line of width 2 in the HSV hue edge / 20 times the product of its
  end scores (times 255), each point a filled circle of radius 4 with blue = score * 255;
- face: each point a filled circle of radius 3, gray = score * 255.
Hand and face points at pixel x or y = 0 (after truncation) are skipped, not thresholded by score.
The canvas is then resized to (height, width) with bilinear interpolation.

The official code draws on a BGR canvas, swaps it to RGB and then writes it with cv2.imwrite (which
takes BGR), so the PNG files hold the canvas values as RGB: `draw_pose` returns them as RGB, i.e.
the limb colors below are the file's RGB colors (the first limb is red, hand points are blue).
"""
import colorsys
import math

import numpy as np

from data_pipelines.poses.keypoints import BODY_LIMBS, HAND_EDGES, PoseKeypoints

STICK_WIDTH = 4
BODY_THRESHOLD = 0.3
DIM = 0.6        # the limb layer is darkened before the joints are drawn over it
REF_SHORT = 2160
# OpenPose's 18 colors (limb i and joint i share color i).
COLORS = np.array([[255, 0, 0], [255, 85, 0], [255, 170, 0], [255, 255, 0], [170, 255, 0],
                   [85, 255, 0], [0, 255, 0], [0, 255, 85], [0, 255, 170], [0, 255, 255],
                   [0, 170, 255], [0, 85, 255], [0, 0, 255], [85, 0, 255], [170, 0, 255],
                   [255, 0, 255], [255, 0, 170], [255, 0, 85]], np.float32)
DRAWN_LIMBS = np.array(BODY_LIMBS[:17])
HAND_COLORS = np.array([colorsys.hsv_to_rgb(i / len(HAND_EDGES), 1.0, 1.0)
                        for i in range(len(HAND_EDGES))])
_EDGES = np.array(HAND_EDGES)


def _scaled_colors(colors, alpha):
  """int(c * alpha) per channel (in float32, as the official code multiplies float32 scores),
  as lists for OpenCV."""
  return (colors * np.asarray(alpha, np.float32)[..., None]).astype(np.int64).tolist()


def draw_body(canvas: np.ndarray, body: np.ndarray, scores: np.ndarray) -> np.ndarray:
  """Limbs, the 0.6 dimming and joints on `canvas` (H, W, 3) uint8; body (18, 2) normalized."""
  import cv2
  h, w = canvas.shape[:2]
  px = body.astype(np.float32) * np.array([w, h], np.float32)
  ends = px[DRAWN_LIMBS]                   # (17, 2 ends, (x, y))
  conf = scores[DRAWN_LIMBS]
  drawn = np.all(conf >= BODY_THRESHOLD, axis=1)
  mid = (ends[:, 0] + ends[:, 1]) / 2
  d = ends[:, 0] - ends[:, 1]
  length = np.sqrt(d[:, 0] ** 2 + d[:, 1] ** 2)
  colors = _scaled_colors(COLORS[:17], conf[:, 0] * conf[:, 1])
  for i in np.nonzero(drawn)[0]:
    angle = math.degrees(math.atan2(d[i, 1], d[i, 0]))
    poly = cv2.ellipse2Poly((int(mid[i, 0]), int(mid[i, 1])), (int(length[i] / 2), STICK_WIDTH),
                            int(angle), 0, 360, 1)
    cv2.fillConvexPoly(canvas, poly, colors[i])
  canvas = (canvas * DIM).astype(np.uint8)
  joints = px.astype(np.int64)       # truncation, as int()
  colors = _scaled_colors(COLORS, scores)
  for i in np.nonzero(scores > BODY_THRESHOLD)[0]:
    cv2.circle(canvas, (int(joints[i, 0]), int(joints[i, 1])), 4, colors[i], thickness=-1)
  return canvas


def _pixels(points, h, w):
  """Normalized (..., 2) -> truncated integer pixels and whether both are > 0 (drawn)."""
  p = (points * np.array([w, h], np.float32)).astype(np.int64)
  return p, np.all(p > 0, axis=-1)


def draw_hands(canvas: np.ndarray, hands: np.ndarray, scores: np.ndarray) -> np.ndarray:
  """Hand edges and points on `canvas`; hands (2, 21, 2) normalized, scores (2, 21)."""
  import cv2
  h, w = canvas.shape[:2]
  for pts, sc in zip(hands, scores):
    p, inside = _pixels(pts, h, w)
    edge_score = (sc[_EDGES[:, 0]] * sc[_EDGES[:, 1]] * 255).astype(np.int64)
    for e in np.nonzero(inside[_EDGES[:, 0]] & inside[_EDGES[:, 1]])[0]:
      a, b = _EDGES[e]
      cv2.line(canvas, (int(p[a, 0]), int(p[a, 1])), (int(p[b, 0]), int(p[b, 1])),
               (HAND_COLORS[e] * edge_score[e]).tolist(), thickness=2)
    blue = (sc * 255).astype(np.int64)
    for i in np.nonzero(inside)[0]:
      cv2.circle(canvas, (int(p[i, 0]), int(p[i, 1])), 4, (0, 0, int(blue[i])), thickness=-1)
  return canvas


def draw_face(canvas: np.ndarray, face: np.ndarray, scores: np.ndarray) -> np.ndarray:
  """Face points on `canvas`; face (68, 2) normalized, scores (68,)."""
  import cv2
  h, w = canvas.shape[:2]
  p, inside = _pixels(face, h, w)
  gray = (scores * 255).astype(np.int64)
  for i in np.nonzero(inside)[0]:
    g = int(gray[i])
    cv2.circle(canvas, (int(p[i, 0]), int(p[i, 1])), 3, (g, g, g), thickness=-1)
  return canvas


def canvas_size(height: int, width: int, ref_short=REF_SHORT):
  """The (h, w) the skeleton is drawn at before the resize: the shorter side scaled to ref_short."""
  if ref_short is None:
    return height, width
  short = min(height, width)
  sr = ref_short / short if short != ref_short else 1
  return int(height * sr), int(width * sr)


def draw_pose(keypoints: PoseKeypoints, height: int, width: int, ref_short=REF_SHORT) -> np.ndarray:
  """One frame's skeleton image, RGB uint8 (height, width, 3) (see the module docstring)."""
  import cv2
  if keypoints.stacked:
    raise ValueError("draw_pose: keypoints of one frame expected; use draw_poses for a clip")
  ch, cw = canvas_size(height, width, ref_short)
  canvas = np.zeros((ch, cw, 3), np.uint8)
  canvas = draw_body(canvas, keypoints.body, keypoints.body_scores)
  canvas = draw_hands(canvas, keypoints.hands, keypoints.hand_scores)
  canvas = draw_face(canvas, keypoints.face, keypoints.face_scores)
  return canvas if (ch, cw) == (height, width) else cv2.resize(canvas, (width, height))


def draw_poses(keypoints: PoseKeypoints, height: int, width: int,
               ref_short=REF_SHORT) -> np.ndarray:
  """A clip's skeleton images, uint8 (F, height, width, 3)."""
  if not keypoints.stacked:
    keypoints = PoseKeypoints.stack([keypoints])
  return np.stack([draw_pose(keypoints.frame(i), height, width, ref_short)
                   for i in range(len(keypoints))])
