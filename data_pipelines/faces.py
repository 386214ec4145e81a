"""Faces for the annotator: each clip's face track (ROOT/faces/<id>.npz or a face detector), its
face masks, and the ArcFace teacher.

Detection, cropping and embedding go through sem_repa_jax/models/encoders/face_embed.py, the path
the ID metric (sem_repa_jax/eval/identity.py) takes, so L_ID targets and the ID score cut faces
out the same way when given the same `crop` setting (face_embed.CROPS).
"""
import dataclasses
from typing import Optional

import numpy as np

from data_pipelines import layout, video
from data_pipelines.annotate import AnnotationError, Clip
from sem_repa_jax.models.encoders.face_detect import FaceDetector
from sem_repa_jax.models.encoders.face_embed import FaceTrack, track_faces


@dataclasses.dataclass
class ClipFaces:
  track: FaceTrack                 # in the resized clip's pixels
  masks: Optional[np.ndarray]      # (F, H, W) bool from the faces file, or None
  file: Optional[str]              # ROOT/faces/<id>.npz when there is one
  identity: Optional[np.ndarray]   # (D,) the faces file's identity vector, or None


def _resize_points(points, clip: Clip) -> np.ndarray:
  """(..., 2) (x, y) source pixels through the frames' resize geometry (as video.resize_boxes)."""
  h, w = clip.source_hw
  s = clip.spec
  nh, nw, top, left = video.resize_geometry(h, w, s.height, s.width, s.resize_mode)
  return np.asarray(points, np.float64) * [nw / w, nh / h] + [left, top]


def _check_frame_size(clip: Clip, faces: dict, fpath: str) -> None:
  """A faces file describes the video's own pixels: its optional `size` (H, W) and its masks must
  be the video's frame size, and its boxes must lie within the frame (a file made at another
  resolution would otherwise scale every box wrong, silently)."""
  h, w = clip.source_hw
  where = f"{fpath} (for {clip.entry.path}, {h}x{w} frames)"
  if "size" in faces and tuple(int(v) for v in np.ravel(faces["size"])) != (h, w):
    raise AnnotationError(f"{where}: made for {tuple(int(v) for v in np.ravel(faces['size']))} "
                          "frames; boxes and masks must be in the video's pixels")
  masks = faces.get("masks")
  if masks is not None and tuple(masks.shape[1:3]) != (h, w):
    raise AnnotationError(f"{where}: masks of {masks.shape[1]}x{masks.shape[2]}; expected the "
                          "video's frame size")
  boxes = np.asarray(faces["boxes"], np.float64)[np.asarray(faces["present"], bool)]
  if len(boxes) and (boxes[:, 2].max() > 1.02 * w + 1 or boxes[:, 3].max() > 1.02 * h + 1):
    raise AnnotationError(f"{where}: face boxes reach x={boxes[:, 2].max():.0f}, "
                          f"y={boxes[:, 3].max():.0f}, beyond the frame; boxes must be in the "
                          "video's pixels (was the file made at another resolution?)")


def _from_file(clip: Clip, faces: dict, fpath: str):
  s = clip.spec
  _check_frame_size(clip, faces, fpath)
  boxes = video.resize_boxes(clip.select_frames(faces["boxes"], fpath), *clip.source_hw,
                             s.height, s.width, s.resize_mode)
  present = clip.select_frames(faces["present"], fpath).astype(bool)
  landmarks = faces.get("landmarks")
  if landmarks is not None:
    landmarks = _resize_points(clip.select_frames(landmarks, fpath), clip)
  masks = faces.get("masks")
  if masks is not None:
    masks = clip.select_frames(masks, fpath).astype(np.uint8)
    masks = video.resize_frames(masks, s.height, s.width, s.resize_mode) > 0
  return FaceTrack(boxes, present, landmarks), masks


@dataclasses.dataclass(frozen=True, eq=False)
class FaceSource:
  """Reads a clip's faces once (shared by the annotators that need them): the detector's kept
  face per frame when there is a detector, else the faces file's boxes (and landmarks, masks)."""
  detector: Optional[FaceDetector] = None

  def __call__(self, clip: Clip) -> ClipFaces:
    if self not in clip.shared:
      clip.shared[self] = self._read(clip)
    return clip.shared[self]

  def _read(self, clip: Clip) -> ClipFaces:
    cid = clip.entry.clip_id
    fpath = layout.faces_path(clip.root, cid)
    faces = dict(np.load(fpath)) if fpath else {}
    if self.detector is not None:
      track, masks = track_faces(clip.frames, self.detector), None
    elif "boxes" in faces:
      track, masks = _from_file(clip, faces, fpath)
    else:
      raise AnnotationError(f"clip {cid}: no faces file {clip.root}/faces/{cid}.npz with 'boxes' "
                            f"and no face detector")
    return ClipFaces(track, masks, fpath, faces.get("identity"))


def box_masks(boxes, present, height: int, width: int) -> np.ndarray:
  """(F, H, W) bool box-shaped face masks, as StableAnimator builds them from detections."""
  ys, xs = np.arange(height)[None, :, None], np.arange(width)[None, None, :]
  b = np.asarray(boxes)[:, :, None, None]
  masks = (xs >= b[:, 0]) & (xs < b[:, 2]) & (ys >= b[:, 1]) & (ys < b[:, 3])
  return masks & np.asarray(present, bool)[:, None, None]


def arcface_embedder(model_dir: str, crop: str = "square", batch_size: int = 64):
  """embed_faces(frames uint8 (F,H,W,3), track) -> (embeds (F,512), present (F,)) with a converted
  ArcFace (load_pretrained folder); faces cut out by `crop` (face_embed.CROPS)."""
  from sem_repa_jax.models import load_pretrained
  from sem_repa_jax.models.encoders import face_embed
  if crop not in face_embed.CROPS:
    raise ValueError(f"face crop {crop!r}: expected one of {face_embed.CROPS}")
  module, variables = load_pretrained(model_dir)

  def embed_faces(frames, track: FaceTrack):
    crops, found = face_embed.crop_faces(frames, track, crop)
    b = track.boxes
    valid = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
    return face_embed.embed(module, variables, crops, batch_size).astype(np.float32), found & valid
  return embed_faces
