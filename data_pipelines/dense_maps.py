"""Dense pose maps of the synthetic figure: the stand-in for VividPose's SMPL-X rendering maps.

VividPose drives SVD with a render of the SMPL-X body fitted to each driving frame, with the shape
parameters of the reference image's fit (paper, sec. 3.3): the map shows the reference's body in
the driving pose, with its surfaces (hands in front of the torso, occlusions) that a skeleton
lacks. Users bring those renders (docs/vividpose.md: one RGB image per frame, aligned with the
video). Here the synthetic renderer draws the same thing for its own figure: `render_clip(seed=
driving clip, identity_seed=reference identity)` poses the reference identity's body (its
proportions) with the driving clip's motion and camera draws, and `normal_map` colours each
figure pixel by its unit camera-space surface normal n (x right, y down, z away from the camera):
RGB = round(255 (n + 1) / 2), background black (no unit normal maps to (0, 0, 0)).
"""
import numpy as np


def normal_map(normals: np.ndarray) -> np.ndarray:
  """(..., H, W, 3) unit normals (0 where no figure) -> uint8 RGB of the same shape."""
  n = np.asarray(normals, np.float32)
  if n.shape[-1:] != (3,):
    raise ValueError(f"normal_map: expected (..., H, W, 3) normals, got shape {n.shape}")
  figure = np.any(n != 0, axis=-1, keepdims=True)
  return np.where(figure, np.round(127.5 * (np.clip(n, -1, 1) + 1)), 0).astype(np.uint8)


def dense_maps(driving_seed: int, reference_identity: int, num_frames: int, height: int,
               width: int, fps: float = 8.0, motion: str | None = None,
               motion_variation: float = 1.0) -> np.ndarray:
  """(F, H, W, 3) uint8: the reference identity's body moving as clip `driving_seed` moves."""
  from data_pipelines.synthetic import render_clip
  clip = render_clip(driving_seed, num_frames, height, width, fps, identity_seed=reference_identity,
                     motion=motion, motion_variation=motion_variation)
  return normal_map(clip.normal)
