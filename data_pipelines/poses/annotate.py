"""A clip's poses on disk, in StableAnimator's animation layout:

```
ROOT/<id>/poses/frame_<i>.png   skeleton images (draw.py), i = 0, 1, ... in frame order
ROOT/<id>/keypoints.npz         the clip's PoseKeypoints (keypoints.py), one row per frame
```
The keypoints come from the DWPose teacher on the frames (`annotate_frames`), or from the synthetic
generator's exact COCO-18 points (`synthetic_keypoints`), so drawing and pose alignment run on
synthetic clips without the ONNX files. Every file is written under a temporary name and renamed,
so an interrupted run leaves whole files only; `write_poses` skips frames already drawn.
"""
import os
from typing import Optional

import numpy as np

from data_pipelines import video
from data_pipelines.poses import draw
from data_pipelines.poses.keypoints import PoseKeypoints, load_keypoints, save_keypoints


def poses_dir(root: str, clip_id: str) -> str:
  return os.path.join(root, clip_id, "poses")


def keypoints_file(root: str, clip_id: str) -> str:
  return os.path.join(root, clip_id, "keypoints.npz")


def _bar(iterable, desc: str, total: int, progress: bool):
  if not progress:
    return iterable
  from tqdm import tqdm
  return tqdm(iterable, desc=desc, total=total, unit="frame")


def estimate_clip(frames, teacher, progress: bool = True, desc: str = "dwpose") -> PoseKeypoints:
  """teacher(image RGB uint8) -> PoseKeypoints on each frame of frames (F, H, W, 3), stacked."""
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3:
    raise ValueError(f"estimate_clip: frames of shape {frames.shape}; expected (F, H, W, 3) RGB")
  return PoseKeypoints.stack([teacher(f) for f in _bar(frames, desc, len(frames), progress)])


def write_poses(root: str, clip_id: str, keypoints: PoseKeypoints, height: Optional[int] = None,
                width: Optional[int] = None, ref_short=draw.REF_SHORT, images: bool = True,
                progress: bool = True) -> str:
  """Writes ROOT/<id>/keypoints.npz and (when `images`) the skeleton PNGs at height x width
  (default: keypoints.image_size); returns the poses folder."""
  if not keypoints.stacked:
    keypoints = PoseKeypoints.stack([keypoints])
  save_keypoints(keypoints_file(root, clip_id), keypoints)
  out = poses_dir(root, clip_id)
  os.makedirs(out, exist_ok=True)
  if not images:
    return out
  if height is None or width is None:
    if keypoints.image_size is None:
      raise ValueError(f"write_poses({clip_id}): keypoints without image_size; give height and "
                       "width of the skeleton images")
    height, width = keypoints.image_size
  for i in _bar(range(len(keypoints)), f"skeletons {clip_id}", len(keypoints), progress):
    path = os.path.join(out, f"frame_{i}.png")
    if not os.path.isfile(path):
      video.write_image(path, draw.draw_pose(keypoints.frame(i), height, width, ref_short))
  return out


def annotate_frames(frames, root: str, clip_id: str, teacher, ref_short=draw.REF_SHORT,
                    images: bool = True, progress: bool = True) -> PoseKeypoints:
  """DWPose (or any teacher) on a clip's frames -> ROOT/<id>/keypoints.npz + poses/frame_<i>.png.
  A clip whose keypoints file exists is not estimated again (its missing images are drawn)."""
  kfile = keypoints_file(root, clip_id)
  frames = np.asarray(frames)
  if os.path.isfile(kfile):
    keypoints = load_keypoints(kfile)
    if len(keypoints) != len(frames):
      raise ValueError(f"{kfile}: {len(keypoints)} frames, but the clip has {len(frames)}; "
                       "remove the file to annotate the clip again")
  else:
    keypoints = estimate_clip(frames, teacher, progress, desc=f"dwpose {clip_id}")
  write_poses(root, clip_id, keypoints, *frames.shape[1:3], ref_short=ref_short, images=images,
              progress=progress)
  return keypoints


def synthetic_keypoints(points: np.ndarray, height: int, width: int) -> PoseKeypoints:
  """The synthetic generator's (F, 18, 3) (x, y pixels, depth) COCO-18 points -> PoseKeypoints:
  normalized; score 1 for a point in the frame and in front of the camera, else 0 (with zero
  coordinates); no hands or face (score 0)."""
  points = np.asarray(points, np.float32)
  if points.ndim != 3 or points.shape[1:] != (18, 3):
    raise ValueError(f"synthetic keypoints of shape {points.shape}; expected (F, 18, 3)")
  xy, z = points[..., :2], points[..., 2]
  inside = (xy[..., 0] >= 0) & (xy[..., 0] < width) & (xy[..., 1] >= 0) & (xy[..., 1] < height) \
      & (z > 0)
  kp = PoseKeypoints.empty(len(points), image_size=(height, width))
  body = np.where(inside[..., None], xy / np.array([width, height], np.float32), 0.0)
  return PoseKeypoints(body, inside.astype(np.float32), kp.hands, kp.hand_scores, kp.face,
                       kp.face_scores, image_size=(height, width))


def synthetic_clip_keypoints(faces_file: str) -> PoseKeypoints:
  """A synthetic clip's keypoints from its ROOT/faces/<id>.npz (keypoints, and masks for the
  frame size), as `synthetic.write_dataset` writes it."""
  if not os.path.isfile(faces_file):
    raise FileNotFoundError(f"{faces_file}: no synthetic faces file")
  with np.load(faces_file) as z:
    if "keypoints" not in z.files or "masks" not in z.files:
      raise ValueError(f"{faces_file}: expected 'keypoints' (F, 18, 3) and 'masks' (F, H, W), as "
                       "data_pipelines/synthetic.py writes them")
    points, size = z["keypoints"], z["masks"].shape[1:3]
  return synthetic_keypoints(points, *size)
