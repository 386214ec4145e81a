"""Face crops of synthetic identities for training and testing a face recognizer
(sem_repa_jax/jobs/train_face_recognizer.py).

`render_faces` renders clips of identities (synthetic.render_clip) and keeps each frame with a
visible face: the frame and its face box, cheap to hold (a 48 x 32 frame is 4.6 kB where its
112 x 112 crop is 150 kB). `FaceCropSource` cuts the faces out on the fly through
face_embed.crop_face, the path the ID metric and the annotator take (crop 'square' for boxes
without landmarks), after moving and scaling the box at random (a detector's box is never exact).
"""
import dataclasses
import os

import numpy as np

from sem_repa_jax.models.encoders import face_embed


@dataclasses.dataclass
class Faces:
  frames: np.ndarray       # (N, H, W, 3) uint8, one size
  boxes: np.ndarray        # (N, 4) float32 xyxy pixels
  identities: np.ndarray   # (N,) int64: index of the identity (0 .. num_identities - 1)
  clips: np.ndarray        # (N,) int64: index of the clip within its identity

  def __len__(self):
    return len(self.boxes)


def render_faces(identity_seeds, clips_per_identity: int, num_frames: int, sizes, render_seed: int,
                 fps: float = 4.0, motion_variations=(0.0, 1.0), progress=None) -> list:
  """[Faces] per frame size in `sizes` ((height, width) pairs): `clips_per_identity` clips of each
  identity seed; clip j of identity k has render seed render_seed + k * clips_per_identity + j,
  frame size sizes[j % len(sizes)] and motion_variation motion_variations[j % len(...)], so one
  identity is seen at every size and with fixed and random motion. Frames without a visible face
  (synthetic face_present) are dropped."""
  from data_pipelines import synthetic
  sizes = [tuple(int(v) for v in s) for s in sizes]
  out = {s: ([], [], [], []) for s in sizes}
  seeds = list(identity_seeds)
  it = range(len(seeds)) if progress is None else progress(range(len(seeds)))
  for k in it:
    for j in range(clips_per_identity):
      size = sizes[j % len(sizes)]
      c = synthetic.render_clip(render_seed + k * clips_per_identity + j, num_frames, *size, fps,
                                identity_seed=int(seeds[k]),
                                motion_variation=motion_variations[j % len(motion_variations)])
      keep = np.flatnonzero(c.face_present)
      f, b, i, cl = out[size]
      f.append(c.rgb[keep]), b.append(c.face_box[keep])
      i.append(np.full(len(keep), k)), cl.append(np.full(len(keep), j))
  return [Faces(np.concatenate(f), np.concatenate(b).astype(np.float32),
                np.concatenate(i).astype(np.int64), np.concatenate(cl).astype(np.int64))
          for f, b, i, cl in out.values() if f]


def save_faces(path: str, faces: list):
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  arrays = {f"{k}_{n}": getattr(f, k) for n, f in enumerate(faces)
            for k in ("frames", "boxes", "identities", "clips")}
  tmp = path + ".tmp.npz"
  np.savez(tmp, **arrays)
  os.replace(tmp, path)


def load_faces(path: str) -> list:
  with np.load(path) as z:
    n = len([k for k in z.files if k.startswith("boxes_")])
    return [Faces(*(z[f"{k}_{i}"] for k in ("frames", "boxes", "identities", "clips")))
            for i in range(n)]


def jitter_box(box, rng: np.random.Generator, shift: float, scale: float) -> np.ndarray:
  """The box moved by up to `shift` of its size along each axis and scaled by up to 1 +- scale."""
  b = np.asarray(box, np.float32)
  c, size = (b[:2] + b[2:]) / 2, b[2:] - b[:2]
  c = c + rng.uniform(-shift, shift, 2) * size
  size = size * rng.uniform(1 - scale, 1 + scale)
  return np.concatenate([c - size / 2, c + size / 2]).astype(np.float32)


def crop(faces: Faces, index: int, size: int = 112, box=None) -> np.ndarray:
  """The ArcFace input of face `index` (crop 'square'), float32 (size, size, 3) in [-1, 1]."""
  return face_embed.crop_face(faces.frames[index], faces.boxes[index] if box is None else box,
                              crop="square", size=size)


def crops(faces: Faces, size: int = 112) -> np.ndarray:
  """Every face cut out with its exact box: (N, size, size, 3) float32."""
  return np.stack([crop(faces, i, size) for i in range(len(faces))]) if len(faces) else \
      np.zeros((0, size, size, 3), np.float32)


class FaceCropSource:
  """Random access to augmented face crops: {'face': (size, size, 3) float32, 'identity': int}.

  `views` augmented copies of every face of every `Faces` (each copy its own box jitter and,
  with probability flip, mirrored: the synthetic face pattern is left-right symmetric), so an
  epoch of len(self) indices sees each face `views` times."""

  def __init__(self, faces: list, views: int, seed: int, size: int = 112, shift: float = 0.1,
               scale: float = 0.15, flip: float = 0.5):
    self.faces = [f for f in faces if len(f)]
    if not self.faces or views < 1:
      raise ValueError(f"FaceCropSource: {sum(len(f) for f in faces)} faces and views={views}; "
                       "need faces and views >= 1")
    self.offsets = np.cumsum([0] + [len(f) for f in self.faces])
    self.views, self.seed, self.size = int(views), int(seed), int(size)
    self.shift, self.scale, self.flip = float(shift), float(scale), float(flip)

  def __len__(self) -> int:
    return int(self.offsets[-1]) * self.views

  def __getitem__(self, index: int) -> dict:
    index = int(index)
    face = index // self.views
    g = int(np.searchsorted(self.offsets, face, side="right")) - 1
    faces, i = self.faces[g], face - int(self.offsets[g])
    rng = np.random.default_rng([self.seed, index])
    x = crop(faces, i, self.size, jitter_box(faces.boxes[i], rng, self.shift, self.scale))
    if rng.random() < self.flip:
      x = x[:, ::-1]
    return {"face": np.ascontiguousarray(x), "identity": np.int32(faces.identities[i])}

  def __repr__(self) -> str:
    return f"FaceCropSource({int(self.offsets[-1])} faces x {self.views} views)"
