"""Training and evaluation pairs for the pose aligner: two frames of one clip, the reference and
the driving frame (StableAnimator++ trains "at the image level" on such pairs; the job perturbs the
driving pose, methods/pose_alignment/objective.py).

Clips come from keypoint files (`keypoints.npz` of the pose annotation: DWPose output or the
synthetic ground truth, keypoints.load_keypoints; they must record their image size) or straight
from the synthetic generator (`synthetic_clips`: COCO-18 points of many identities with different
body proportions, motions and cameras, without rendering; a point outside the frame is missing).
Both give body points in isotropic coordinates (keypoints.isotropic) with their scores.

`PosePairSource` is a random-access source: item i is a fixed pair of clip i // pairs_per_clip
(two distinct frames drawn from (seed, i)), so a shuffled grain dataset over it is reproducible
and resumable like the record datasets.
"""
import glob
import os

import numpy as np

from data_pipelines.poses.annotate import synthetic_keypoints
from data_pipelines.poses.keypoints import KeypointsFileError, isotropic, load_keypoints

FIELDS = ("reference", "reference_scores", "driving", "driving_scores")


def synthetic_clips(num_clips: int, num_frames: int, seed: int, height: int = 480,
                    width: int = 720, vertical_fraction: float = 0.25, progress=None) -> list:
  """[(points (F, 18, 2) isotropic, scores (F, 18))] of `num_clips` synthetic clips, one identity
  each (synthetic.clip_plans with `seed`: other seeds give other identities)."""
  from data_pipelines import synthetic
  out = []
  for plan in synthetic.clip_plans(num_clips, seed, vertical_fraction=vertical_fraction,
                                   height=height, width=width, progress=progress):
    points = synthetic.clip_keypoints(plan.render_seed, num_frames, *plan.size,
                                      identity_seed=plan.identity_seed)
    kp = synthetic_keypoints(points, *plan.size)
    out.append((isotropic(kp.body, plan.size), kp.body_scores))
  return out


def keypoint_file_clips(pattern: str) -> list:
  """[(points, scores)] of every keypoints .npz matching `pattern` (a glob, or one file)."""
  paths = sorted(glob.glob(pattern)) if any(c in pattern for c in "*?[") else [pattern]
  if not paths or not all(os.path.isfile(p) for p in paths):
    raise FileNotFoundError(f"config.data.keypoints = {pattern!r}: no keypoints files (expected "
                            "a glob of the pose annotation's <id>/keypoints.npz)")
  out = []
  for path in paths:
    kp = load_keypoints(path)
    if kp.image_size is None:
      raise KeypointsFileError(f"{path}: no 'image_size'; the aligner needs it to make x and y "
                               "one unit (write the file with the frames' size)")
    out.append((isotropic(kp.body, kp.image_size), kp.body_scores))
  return out


class PosePairSource:
  """Random access to (reference, driving) pairs of frames of the same clip (module docstring)."""

  def __init__(self, clips: list, pairs_per_clip: int, seed: int):
    clips = [(np.asarray(p, np.float32), np.asarray(s, np.float32)) for p, s in clips]
    short = [i for i, (p, _) in enumerate(clips) if len(p) < 2]
    if not clips or short:
      raise ValueError(f"PosePairSource: {len(clips)} clips, {len(short)} of them with fewer than "
                       "2 frames; every clip needs two frames to make a pair")
    if pairs_per_clip < 1:
      raise ValueError(f"pairs_per_clip={pairs_per_clip}: expected >= 1")
    self.clips, self.pairs_per_clip, self.seed = clips, int(pairs_per_clip), int(seed)

  def __len__(self) -> int:
    return len(self.clips) * self.pairs_per_clip

  def __getitem__(self, index: int) -> dict:
    index = int(index)
    points, scores = self.clips[index // self.pairs_per_clip]
    a, b = np.random.default_rng([self.seed, index]).choice(len(points), 2, replace=False)
    return {"reference": points[a], "reference_scores": scores[a], "driving": points[b],
            "driving_scores": scores[b]}

  def __repr__(self) -> str:
    return f"PosePairSource({len(self.clips)} clips x {self.pairs_per_clip} pairs)"

  def arrays(self) -> dict:
    """Every pair stacked: {field: (len, ...)} (evaluation sets)."""
    items = [self[i] for i in range(len(self))]
    return {k: np.stack([it[k] for it in items]) for k in FIELDS}
