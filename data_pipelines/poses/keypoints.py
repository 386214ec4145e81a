"""The keypoint format every pose part of the project shares (DWPose output, the synthetic
generator's ground truth, skeleton drawing, pose alignment).

One person per frame, as DWPose returns it in StableAnimator/MimicMotion:
  body (18, 2) in OpenPose/COCO-18 order (BODY_NAMES), hands (2, 21, 2) (the person's left hand,
  then the right, each in COCO-WholeBody hand order: wrist, then 4 points per finger from the
  thumb), face (68, 2) (the 300-W/iBUG landmarks), each with scores in [0, 1].
Coordinates are (x, y) normalized by the image width and height (x / W, y / H), so a pose can be
drawn at any resolution; `image_size` (H, W) keeps the aspect ratio when it is known. A missing
point has score 0 (and coordinates 0 when nothing was estimated at all, which the drawing skips).

A clip's keypoints are one `PoseKeypoints` with a leading frame axis, saved as an .npz with one
array per field (`save_keypoints`, `load_keypoints`).
"""
import dataclasses
import os
from typing import Optional, Sequence, Union

import numpy as np

# "right" is the person's right (OpenPose).
BODY_NAMES = ("nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow",
              "l_wrist", "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "r_eye",
              "l_eye", "r_ear", "l_ear")
# OpenPose's limb pairs (0-based), in the order whose colors the skeleton drawing uses; the last two
# (shoulder-ear) are part of OpenPose's list but StableAnimator/MimicMotion draw only the first 17.
BODY_LIMBS = ((1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11),
              (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17), (2, 16), (5, 17))
# Hand skeleton: the wrist to each finger's base, then along the finger.
HAND_EDGES = tuple((0 if j == 0 else 4 * f + j, 4 * f + j + 1) for f in range(5) for j in range(4))
NUM_BODY, NUM_HAND, NUM_FACE = 18, 21, 68

# field -> trailing shape
FIELDS = {"body": (NUM_BODY, 2), "body_scores": (NUM_BODY,), "hands": (2, NUM_HAND, 2),
          "hand_scores": (2, NUM_HAND), "face": (NUM_FACE, 2), "face_scores": (NUM_FACE,)}


class KeypointsFileError(ValueError):
  """A keypoints file that cannot be read; the message names the file and the field at fault."""


@dataclasses.dataclass(frozen=True)
class PoseKeypoints:
  """One person's keypoints, for one frame (no leading axis) or a clip (leading frame axis)."""
  body: np.ndarray          # (..., 18, 2) float32 normalized (x, y)
  body_scores: np.ndarray   # (..., 18)
  hands: np.ndarray         # (..., 2, 21, 2) left hand, right hand
  hand_scores: np.ndarray   # (..., 2, 21)
  face: np.ndarray          # (..., 68, 2)
  face_scores: np.ndarray   # (..., 68)
  image_size: Optional[tuple] = None   # (H, W) of the frames, when known

  def __post_init__(self):
    lead = None
    for name, tail in FIELDS.items():
      arr = np.asarray(getattr(self, name), np.float32)
      if arr.shape[arr.ndim - len(tail):] != tail or arr.ndim > len(tail) + 1:
        raise ValueError(f"PoseKeypoints.{name}: shape {arr.shape}; expected {tail} or "
                         f"(frames, *{tail})")
      here = arr.shape[:arr.ndim - len(tail)]
      if lead is not None and here != lead:
        raise ValueError(f"PoseKeypoints.{name}: leading shape {here}, but body has {lead}")
      lead = here
      object.__setattr__(self, name, arr)
    if self.image_size is not None:
      object.__setattr__(self, "image_size", tuple(int(v) for v in self.image_size))

  @property
  def stacked(self) -> bool:
    return self.body.ndim == 3

  def __len__(self) -> int:
    if not self.stacked:
      raise TypeError("PoseKeypoints of one frame has no length; stack frames first")
    return self.body.shape[0]

  def frame(self, i: int) -> "PoseKeypoints":
    return PoseKeypoints(*(getattr(self, n)[i] for n in FIELDS), image_size=self.image_size)

  @staticmethod
  def empty(num_frames: Optional[int] = None, image_size=None) -> "PoseKeypoints":
    """Keypoints with every point missing (zeros), for one frame or `num_frames`."""
    lead = () if num_frames is None else (num_frames,)
    return PoseKeypoints(*(np.zeros(lead + t, np.float32) for t in FIELDS.values()),
                         image_size=image_size)

  @staticmethod
  def stack(frames: Sequence["PoseKeypoints"]) -> "PoseKeypoints":
    frames = list(frames)
    if not frames or any(f.stacked for f in frames):
      raise ValueError("PoseKeypoints.stack: expected a non-empty list of single frames")
    return PoseKeypoints(*(np.stack([getattr(f, n) for f in frames]) for n in FIELDS),
                         image_size=frames[0].image_size)

  def to_pixels(self, height: int, width: int) -> "PoseKeypoints":
    """The same keypoints in pixel coordinates of an (height, width) image."""
    s = np.array([width, height], np.float32)
    return dataclasses.replace(self, body=self.body * s, hands=self.hands * s, face=self.face * s)


def save_keypoints(path: str, keypoints: Union[PoseKeypoints, Sequence[PoseKeypoints]]) -> str:
  """Writes a clip's keypoints (stacked, one frame, or a list of frames) to `path` (.npz)
  atomically: one array per field with a leading frame axis, and `image_size` when known."""
  kp = keypoints if isinstance(keypoints, PoseKeypoints) else PoseKeypoints.stack(keypoints)
  if not kp.stacked:
    kp = PoseKeypoints.stack([kp])
  arrays = {n: getattr(kp, n) for n in FIELDS}
  if kp.image_size is not None:
    arrays["image_size"] = np.asarray(kp.image_size, np.int64)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "wb") as f:
    np.savez_compressed(f, **arrays)
  os.replace(tmp, path)
  return path


def load_keypoints(path: str) -> PoseKeypoints:
  """A clip's keypoints from `save_keypoints`' .npz, stacked over frames."""
  if not os.path.isfile(path):
    raise KeypointsFileError(f"{path}: no keypoints file")
  try:
    with np.load(path, allow_pickle=False) as z:
      data = {k: z[k] for k in z.files}
  except Exception as e:   # a truncated zip, not an npz, a pickled object
    raise KeypointsFileError(f"{path}: not a keypoints .npz ({type(e).__name__}: {e})") from e
  missing = [n for n in FIELDS if n not in data]
  if missing:
    raise KeypointsFileError(f"{path}: missing field(s) {missing}; a keypoints file has "
                             f"{list(FIELDS)} (and optionally image_size)")
  frames = None
  for n, tail in FIELDS.items():
    shape = data[n].shape
    if shape[1:] != tail or (frames is not None and shape[0] != frames):
      want = f"({frames if frames is not None else 'F'}, {', '.join(map(str, tail))})"
      raise KeypointsFileError(f"{path}: field {n!r} has shape {shape}; expected {want}")
    frames = shape[0]
  size = data.get("image_size")
  if size is not None and size.shape != (2,):
    raise KeypointsFileError(f"{path}: field 'image_size' has shape {size.shape}; expected (2,) "
                             "(height, width)")
  return PoseKeypoints(*(data[n] for n in FIELDS),
                       image_size=None if size is None else tuple(int(v) for v in size))


def isotropic(points: np.ndarray, image_size) -> np.ndarray:
  """Normalized (x / W, y / H) points -> (x, y) / max(H, W): one unit on both axes, so rotations
  and similarity fits do not shear the figure (the pose aligner's coordinates)."""
  h, w = image_size
  return np.asarray(points, np.float32) * (np.array([w, h], np.float32) / max(h, w))


def from_isotropic(points: np.ndarray, image_size) -> np.ndarray:
  """The inverse of `isotropic`."""
  h, w = image_size
  return np.asarray(points, np.float32) * (max(h, w) / np.array([w, h], np.float32))
