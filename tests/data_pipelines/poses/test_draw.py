"""Skeleton images equal a drawing made here with direct OpenCV calls, one primitive at a time
in the order StableAnimator/MimicMotion draw them, for the same keypoints."""
import colorsys
import math

import cv2
import numpy as np
import pytest

from data_pipelines.poses import draw
from data_pipelines.poses.keypoints import PoseKeypoints

LIMBS = [[2, 3], [2, 6], [3, 4], [4, 5], [6, 7], [7, 8], [2, 9], [9, 10], [10, 11], [2, 12],
         [12, 13], [13, 14], [2, 1], [1, 15], [15, 17], [1, 16], [16, 18]]     # 1-based, 17 drawn
COLORS = [[255, 0, 0], [255, 85, 0], [255, 170, 0], [255, 255, 0], [170, 255, 0], [85, 255, 0],
          [0, 255, 0], [0, 255, 85], [0, 255, 170], [0, 255, 255], [0, 170, 255], [0, 85, 255],
          [0, 0, 255], [85, 0, 255], [170, 0, 255], [255, 0, 255], [255, 0, 170], [255, 0, 85]]
FINGERS = [[0, 1], [1, 2], [2, 3], [3, 4], [0, 5], [5, 6], [6, 7], [7, 8], [0, 9], [9, 10],
           [10, 11], [11, 12], [0, 13], [13, 14], [14, 15], [15, 16], [0, 17], [17, 18], [18, 19],
           [19, 20]]


def reference(kp: PoseKeypoints, H, W, ref_short):
  sr = ref_short / min(H, W) if ref_short and min(H, W) != ref_short else 1
  canvas = np.zeros((int(H * sr), int(W * sr), 3), np.uint8)
  h, w = canvas.shape[:2]
  cand, score = kp.body, kp.body_scores
  for i, (a, b) in enumerate(LIMBS):
    conf = score[[a - 1, b - 1]]
    if conf[0] < 0.3 or conf[1] < 0.3:
      continue
    Y = cand[[a - 1, b - 1], 0] * float(w)
    X = cand[[a - 1, b - 1], 1] * float(h)
    length = ((X[0] - X[1]) ** 2 + (Y[0] - Y[1]) ** 2) ** 0.5
    angle = math.degrees(math.atan2(X[0] - X[1], Y[0] - Y[1]))
    poly = cv2.ellipse2Poly((int(np.mean(Y)), int(np.mean(X))), (int(length / 2), 4), int(angle),
                            0, 360, 1)
    cv2.fillConvexPoly(canvas, poly, [int(c * (conf[0] * conf[1])) for c in COLORS[i]])
  canvas = (canvas * 0.6).astype(np.uint8)
  for i in range(18):
    if score[i] > 0.3:
      x, y = cand[i]
      cv2.circle(canvas, (int(x * w), int(y * h)), 4, [int(c * score[i]) for c in COLORS[i]],
                 thickness=-1)
  for peaks, scores in zip(kp.hands, kp.hand_scores):
    for ie, (a, b) in enumerate(FINGERS):
      x1, y1, x2, y2 = int(peaks[a][0] * w), int(peaks[a][1] * h), int(peaks[b][0] * w), \
          int(peaks[b][1] * h)
      s = int(scores[a] * scores[b] * 255)
      if x1 > 0.01 and y1 > 0.01 and x2 > 0.01 and y2 > 0.01:
        cv2.line(canvas, (x1, y1), (x2, y2),
                 np.array(colorsys.hsv_to_rgb(ie / 20.0, 1.0, 1.0)) * s, thickness=2)
    for (x, y), s in zip(peaks, scores):
      x, y = int(x * w), int(y * h)
      if x > 0.01 and y > 0.01:
        cv2.circle(canvas, (x, y), 4, (0, 0, int(s * 255)), thickness=-1)
  for (x, y), s in zip(kp.face, kp.face_scores):
    x, y, c = int(x * w), int(y * h), int(s * 255)
    if x > 0.01 and y > 0.01:
      cv2.circle(canvas, (x, y), 3, (c, c, c), thickness=-1)
  return canvas if canvas.shape[:2] == (H, W) else cv2.resize(canvas, (W, H))


def person(rng, missing=0.25):
  """A random person: points in [0.05, 0.95] (a few just outside), scores with some below 0.3
  and some exactly 0 with coordinates 0 (nothing estimated)."""
  def pts(*shape):
    return rng.uniform(-0.02, 1.0, shape + (2,)).astype(np.float32)

  def sc(*shape):
    s = rng.uniform(0, 1, shape).astype(np.float32)
    return np.where(rng.random(shape) < missing, rng.uniform(0, 0.35, shape), s).astype(np.float32)
  kp = PoseKeypoints(pts(18), sc(18), pts(2, 21), sc(2, 21), pts(68), sc(68))
  gone = rng.random(21) < 0.2
  kp.hands[1][gone], kp.hand_scores[1][gone] = 0.0, 0.0
  return kp


@pytest.mark.parametrize("hw,ref_short", [((40, 56), None), ((48, 32), 96), ((30, 44), 30)])
def test_skeleton_equals_the_reference_drawing(hw, ref_short):
  rng = np.random.default_rng(hw[0])
  for _ in range(4):
    kp = person(rng)
    got = draw.draw_pose(kp, *hw, ref_short=ref_short)
    want = reference(kp, *hw, ref_short)
    assert got.shape == hw + (3,) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, want)
    assert got.any()


def test_colors_thresholds_and_clip_drawing():
  kp = PoseKeypoints.empty()
  kp.body[[1, 2]] = [[0.3, 0.5], [0.7, 0.5]]      # neck -> right shoulder: limb 0, red
  kp.body_scores[[1, 2]] = 1.0
  img = draw.draw_pose(kp, 40, 40, ref_short=None)
  assert tuple(img[20, 20]) == (153, 0, 0)          # the limb, dimmed by 0.6
  assert tuple(img[20, 12]) == (255, 85, 0)         # the neck joint over it, color 1
  kp.body_scores[2] = 0.29                           # below the threshold: limb and joint gone
  img2 = draw.draw_pose(kp, 40, 40, ref_short=None)
  assert not img2[20, 20].any() and not img2[20, 28].any() and img2[20, 12].any()
  clip = PoseKeypoints.stack([kp, PoseKeypoints.empty()])
  frames = draw.draw_poses(clip, 40, 40, ref_short=None)
  assert frames.shape == (2, 40, 40, 3) and not frames[1].any()
  np.testing.assert_array_equal(frames[0], img2)
  assert draw.canvas_size(512, 768) == (2160, 3240) and draw.canvas_size(2160, 100, 2160) == \
      (int(2160 * 21.6), 2160)
