"""Annotators: one per group of record fields, each computing its fields of a clip from the clip's
frames and the teacher it was given.

  VideoLatents   video_latents                 encode_video(frames)
  DepthLatents   depth_latents                 encode_video(colorized teacher depth)
  ImageLatents   image_latents, image_noise_sigma   encode_video(first frame + pixel noise)
  FaceEmbeds     face_embeds, face_present     ArcFace (or the faces file's identity), L2-normalized
  FaceBoxes      face_boxes, face_masks        the face track's boxes, mask coverage per cell
  TextEmbeds     text_embeds                   encode_text(caption)
StableAnimator's (the reference is the clip's first frame):
  ReferenceLatents  reference_latents          encode_video(reference + N(0, 0.02^2) pixel noise)
  ClipEmbeds        clip_embeds                encode_image(reference): CLIP image_embeds
  IdEmbeds          id_embeds                  ArcFace of the reference's face, raw (not normalized)
  PoseImages        pose_images                skeleton images (ROOT/poses/<id>/: drawn, or keypoints)
  FaceWeightMasks   face_weight_masks          filled face boxes (all ones without a face), latent size
VividPose's (StableAnimator's fields and):
  DenseMaps         dense_maps                 dense pose maps (ROOT/dense/<id>/frame_<i>.png)

`ANNOTATORS` maps each field to its annotator; `for_fields(fields, teachers)` builds the ones a set
of fields needs, and `for_method(method, teachers)` those of a method's fields
(records.METHOD_FIELDS). An annotator is a callable `(clip) -> {field: value}` returning exactly
its `fields`, in order (the record keeps that order); annotate.Clip carries the frames. Its inputs
are named after the Teachers fields they take (plus `faces`, the clip's shared FaceSource).
"""
import dataclasses
import os
import zlib
from typing import Callable, ClassVar, Optional

import numpy as np

from data_pipelines import depth as depth_lib
from data_pipelines import faces as faces_lib
from data_pipelines import layout, records, video
from data_pipelines.annotate import AnnotationError, Clip
from data_pipelines.poses import annotate as poses_annotate
from data_pipelines.poses import draw
from data_pipelines.poses.keypoints import load_keypoints
from sem_repa_jax.eval.colorize import colorize_depth
from sem_repa_jax.models.encoders.face_embed import FaceTrack


@dataclasses.dataclass
class Teachers:
  """The pluggable models annotators are built from. Only encode_video is required."""
  encode_video: Callable[[np.ndarray], np.ndarray]
  # (frames uint8 (F,H,W,3), face_embed.FaceTrack) -> (embeds (F,D), present (F,)); None: the
  # faces file's identity vector is the embedding (synthetic data, where it is exact).
  embed_faces: Optional[Callable] = None
  # a face_detect.FaceDetector (e.g. SCRFD) run on the resized frames; None: ROOT/faces/<id>.npz.
  face_detector: Optional[object] = None
  # frames uint8 (F,H,W,3) -> depth (F,H,W), larger = farther; None: ROOT/depth/<id>.npy|.npz.
  depth: Optional[Callable] = None
  # caption -> (L, D) array; None: no text_embeds key.
  encode_text: Optional[Callable] = None
  # image (H,W,3) in [-1,1] -> (D,) CLIP image embedding (teachers.clip_image_encoder).
  encode_image: Optional[Callable] = None


def clip_seed(seed: int, clip_id: str) -> np.random.Generator:
  """Per-clip randomness that does not depend on sharding or on the order clips are processed."""
  return np.random.default_rng([seed, zlib.crc32(clip_id.encode())])


def _latents(encode_video, x) -> np.ndarray:
  return np.asarray(encode_video(x), np.float32)


def _noisy_first_frame(clip: Clip, sigma: float, rng: np.random.Generator) -> np.ndarray:
  """The clip's first frame (1, H, W, 3) in [-1, 1] plus sigma * N(0, 1) pixel noise."""
  x = video.to_model_range(clip.frames[:1])
  return x + sigma * rng.standard_normal(x.shape).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class VideoLatents:
  encode_video: Callable
  fields: ClassVar = ("video_latents",)

  def __call__(self, clip: Clip) -> dict:
    return {"video_latents": _latents(self.encode_video, video.to_model_range(clip.frames))}


@dataclasses.dataclass(frozen=True)
class DepthLatents:
  """Teacher depth (callable, or the depth file sampled and resized as the frames; its padding
  gets the farthest depth) -> colorized (brighter = closer, inferno) -> encode_video."""
  encode_video: Callable
  depth: Optional[Callable] = None
  fields: ClassVar = ("depth_latents",)

  def teacher_depth(self, clip: Clip) -> np.ndarray:
    s, cid = clip.spec, clip.entry.clip_id
    if self.depth is not None:
      d = np.asarray(self.depth(clip.frames), np.float32)
      if d.shape != clip.frames.shape[:3]:
        raise AnnotationError(f"depth teacher output for {cid}: shape {d.shape}, expected "
                              f"{clip.frames.shape[:3]}")
      return d
    dpath = layout.depth_path(clip.root, cid)
    if dpath is None:
      raise AnnotationError(f"clip {cid}: no depth file {clip.root}/depth/{cid}.npy|.npz and no "
                            f"depth teacher")
    d = clip.select_frames(depth_lib.load_depth(dpath), dpath)
    if tuple(d.shape[1:3]) != tuple(clip.source_hw):
      raise AnnotationError(f"{dpath}: depth frames of {d.shape[1]}x{d.shape[2]}, but "
                            f"{clip.entry.path} has {clip.source_hw[0]}x{clip.source_hw[1]} "
                            "frames; teacher depth must be at the video's own size")
    far = d.min() if s.disparity else d.max()
    return video.resize_frames(d, s.height, s.width, s.resize_mode, pad_value=far)

  def __call__(self, clip: Clip) -> dict:
    rgb = colorize_depth(self.teacher_depth(clip),
                         kind="disparity" if clip.spec.disparity else "depth")
    return {"depth_latents": _latents(self.encode_video, video.to_model_range(rgb))}


@dataclasses.dataclass(frozen=True)
class ImageLatents:
  """The first frame plus pixel noise of sigma = exp(N(-3, 0.5)) (CogVideoX I2V's augmentation),
  drawn from `clip_seed(spec.seed, clip_id)`."""
  encode_video: Callable
  fields: ClassVar = ("image_latents", "image_noise_sigma")

  def __call__(self, clip: Clip) -> dict:
    rng = clip_seed(clip.spec.seed, clip.entry.clip_id)
    sigma = float(np.exp(rng.normal(-3.0, 0.5)))
    first = _noisy_first_frame(clip, sigma, rng)
    return {"image_latents": _latents(self.encode_video, first), "image_noise_sigma": sigma}


REFERENCE_NOISE = 0.02   # the official noise augmentation of the reference (and added_time_ids')


@dataclasses.dataclass(frozen=True)
class ReferenceLatents:
  """StableAnimator's reference latent (h, w, c): the first frame plus REFERENCE_NOISE pixel
  noise (drawn from `clip_seed`), encoded as the video latents (scaled; the objective unscales)."""
  encode_video: Callable
  fields: ClassVar = ("reference_latents",)

  def __call__(self, clip: Clip) -> dict:
    rng = clip_seed(clip.spec.seed, clip.entry.clip_id)
    ref = _noisy_first_frame(clip, REFERENCE_NOISE, rng)
    return {"reference_latents": _latents(self.encode_video, ref)[0]}


@dataclasses.dataclass(frozen=True)
class ClipEmbeds:
  """The CLIP image embedding (D,) of the reference (the first frame), without noise."""
  encode_image: Callable
  fields: ClassVar = ("clip_embeds",)

  def __call__(self, clip: Clip) -> dict:
    image = video.to_model_range(clip.frames[0])
    return {"clip_embeds": np.asarray(self.encode_image(image), np.float32)}


@dataclasses.dataclass(frozen=True)
class FaceEmbeds:
  """Embeddings of the track's faces (embed_faces, or the faces file's identity), L2-normalized,
  zero where absent; present = tracked and embedded."""
  faces: faces_lib.FaceSource
  embed_faces: Optional[Callable] = None
  fields: ClassVar = ("face_embeds", "face_present")

  def __call__(self, clip: Clip) -> dict:
    embeds, present = _track_embeddings(clip, self.faces, self.embed_faces, clip.spec.num_frames)
    norm = np.linalg.norm(embeds, axis=-1, keepdims=True)
    embeds = np.where(present[:, None], embeds / np.maximum(norm, 1e-12), 0).astype(np.float32)
    return {"face_embeds": embeds, "face_present": present}


def _track_embeddings(clip: Clip, faces: faces_lib.FaceSource, embed_faces, frames: int):
  """(embeds (frames, D) float32, present (frames,)) of the face track's first `frames` frames:
  embed_faces' (present where tracked and embedded), else the faces file's identity."""
  f = faces(clip)
  t = f.track
  track = FaceTrack(t.boxes[:frames], t.present[:frames],
                    None if t.landmarks is None else t.landmarks[:frames])
  present = np.asarray(track.present, bool)
  if embed_faces is not None:
    embeds, ok = embed_faces(clip.frames[:frames], track)
    return np.asarray(embeds, np.float32), present & np.asarray(ok, bool)
  if f.identity is not None:
    return np.tile(f.identity.astype(np.float32)[None], (frames, 1)), present
  raise AnnotationError(f"clip {clip.entry.clip_id}: no face embedder and no 'identity' in "
                        f"{f.file}")


@dataclasses.dataclass(frozen=True)
class IdEmbeds:
  """StableAnimator's face embedding (D,): the reference's (first frame's) face of the face track,
  embedded as FaceEmbeds does but raw, not L2-normalized (the official antelopev2 `embedding`);
  zeros when the reference has no face."""
  faces: faces_lib.FaceSource
  embed_faces: Optional[Callable] = None
  fields: ClassVar = ("id_embeds",)

  def __call__(self, clip: Clip) -> dict:
    embeds, present = _track_embeddings(clip, self.faces, self.embed_faces, 1)
    return {"id_embeds": np.where(present[0], embeds[0], 0).astype(np.float32)}


def _coverage(masks: np.ndarray, stride: int) -> np.ndarray:
  f, h, w = masks.shape
  m = masks[:, :h - h % stride, :w - w % stride].astype(np.float32)
  return m.reshape(f, h // stride, stride, w // stride, stride).mean((2, 4)).astype(np.float16)


@dataclasses.dataclass(frozen=True)
class FaceBoxes:
  """The track's boxes and the fraction of face pixels per mask_stride cell (the faces file's
  masks, else box-shaped ones)."""
  faces: faces_lib.FaceSource
  fields: ClassVar = ("face_boxes", "face_masks")

  def __call__(self, clip: Clip) -> dict:
    f, s = self.faces(clip), clip.spec
    boxes = np.asarray(f.track.boxes, np.float32)
    masks = f.masks if f.masks is not None else \
        faces_lib.box_masks(boxes, f.track.present, s.height, s.width)
    return {"face_boxes": boxes, "face_masks": _coverage(masks, s.mask_stride)}


def nearest_downsample(masks: np.ndarray, height: int, width: int) -> np.ndarray:
  """(F, H, W) -> (F, height, width) by nearest neighbour, as torch's F.interpolate(mode='nearest'):
  output pixel i takes input pixel floor(i * H / height)."""
  h, w = masks.shape[1:3]
  rows = np.floor(np.arange(height) * (h / height)).astype(np.int64)
  cols = np.floor(np.arange(width) * (w / width)).astype(np.int64)
  return masks[:, rows][:, :, cols]


@dataclasses.dataclass(frozen=True)
class FaceWeightMasks:
  """StableAnimator's loss mask M, uint8 0/1 (F, H / mask_stride, W / mask_stride): each frame's
  face box of the track filled, the whole frame where no face was found (the official then
  up-weights every pixel), nearest-downsampled to the latent grid (mask_stride = the VAE's spatial
  compression)."""
  faces: faces_lib.FaceSource
  fields: ClassVar = ("face_weight_masks",)

  def __call__(self, clip: Clip) -> dict:
    f, s = self.faces(clip), clip.spec
    present = np.asarray(f.track.present, bool)
    masks = faces_lib.box_masks(f.track.boxes, present, s.height, s.width)
    masks[~present] = True
    small = nearest_downsample(masks, s.height // s.mask_stride, s.width // s.mask_stride)
    return {"face_weight_masks": small.astype(np.uint8)}


def check_mask_grid(encode_video: Callable, spec) -> None:
  """Raises ValueError unless face_weight_masks (H / mask_stride, W / mask_stride) lie on the
  latent grid of encode_video (one frame of zeros is encoded to see it)."""
  h, w = spec.height // spec.mask_stride, spec.width // spec.mask_stride
  lat = np.shape(encode_video(np.zeros((1, spec.height, spec.width, 3), np.float32)))
  if tuple(lat[1:3]) != (h, w):
    raise ValueError(f"annotate.mask_stride={spec.mask_stride}: face_weight_masks would be "
                     f"{h}x{w}, but the latents of {spec.height}x{spec.width} frames are "
                     f"{lat[1]}x{lat[2]}; set it to the VAE's spatial compression")


@dataclasses.dataclass(frozen=True)
class PoseImages:
  """Skeleton images uint8 (F, H, W, 3) at the clip's size: ROOT/poses/<id>/poses/frame_<i>.png
  when they are there, else drawn (poses/draw.py, StableAnimator's style) from
  ROOT/poses/<id>/keypoints.npz at the video's frame size; sampled and resized as the frames."""
  fields: ClassVar = ("pose_images",)

  def __call__(self, clip: Clip) -> dict:
    cid = clip.entry.clip_id
    proot = layout.poses_root(clip.root)
    folder, kfile = poses_annotate.poses_dir(proot, cid), poses_annotate.keypoints_file(proot, cid)
    if _has_frames(folder):
      return {"pose_images": _clip_images(clip, folder, "skeleton images")}
    if os.path.isfile(kfile):
      kp = load_keypoints(kfile)
      h, w = clip.source_hw
      raw = np.stack([draw.draw_pose(kp.frame(int(i)), h, w)
                      for i in clip.frame_indices(len(kp), kfile)])
    else:
      raise AnnotationError(f"clip {cid}: no skeleton images {folder}/frame_<i>.png and no "
                            f"keypoints file {kfile}")
    return {"pose_images": _resized(clip, raw, kfile, "skeleton images")}


def _has_frames(folder: str) -> bool:
  return os.path.isdir(folder) and any(video.FRAME_FILE.fullmatch(f) for f in os.listdir(folder))


def _resized(clip: Clip, raw: np.ndarray, source: str, what: str) -> np.ndarray:
  """Per-frame images at the video's size -> the clip's size, as the frames are resized."""
  if raw.shape[1:3] != tuple(clip.source_hw):
    raise AnnotationError(f"{source}: {what} of {raw.shape[1]}x{raw.shape[2]}, but "
                          f"{clip.entry.path} has {clip.source_hw[0]}x{clip.source_hw[1]} frames")
  s = clip.spec
  return video.resize_frames(raw, s.height, s.width, s.resize_mode)


def _clip_images(clip: Clip, folder: str, what: str) -> np.ndarray:
  """A folder of frame_<i>.png (the video's or the clip's frame count), sampled as the frames
  and resized to the clip's size."""
  files = video.frame_files(folder)
  return _resized(clip, video.read_frame_folder(folder, clip.frame_indices(len(files), folder)),
                  folder, what)


@dataclasses.dataclass(frozen=True)
class DenseMaps:
  """VividPose's dense pose maps uint8 (F, H, W, 3) at the clip's size: the SMPL-X renders of
  ROOT/dense/<id>/frame_<i>.png (official layout: <clip>/dense/), sampled and resized as the
  frames. A clip without them is an error naming it."""
  fields: ClassVar = ("dense_maps",)

  def __call__(self, clip: Clip) -> dict:
    cid = clip.entry.clip_id
    folder = layout.dense_dir(clip.root, cid)
    if not _has_frames(folder):
      raise AnnotationError(f"clip {cid}: no dense maps {folder}/frame_<i>.png (VividPose's "
                            "dense pose maps; official layout: <clip>/dense/frame_<i>.png)")
    return {"dense_maps": _clip_images(clip, folder, "dense maps")}


@dataclasses.dataclass(frozen=True)
class TextEmbeds:
  encode_text: Callable
  fields: ClassVar = ("text_embeds",)

  def __call__(self, clip: Clip) -> dict:
    return {"text_embeds": np.asarray(self.encode_text(clip.entry.caption))}


ANNOTATORS = {f: cls for cls in (VideoLatents, DepthLatents, ImageLatents, FaceEmbeds, FaceBoxes,
                                 TextEmbeds, ReferenceLatents, ClipEmbeds, IdEmbeds, PoseImages,
                                 FaceWeightMasks, DenseMaps) for f in cls.fields}


def for_fields(fields, teachers: Teachers) -> tuple:
  """The annotators writing `fields`, in the order of their first field (an annotator writes all
  of its fields); the face annotators share one FaceSource, so a clip's faces are read once."""
  unknown = [f for f in fields if f not in ANNOTATORS]
  if unknown:
    raise ValueError(f"record fields {unknown}: no annotator writes them; known: "
                     f"{sorted(ANNOTATORS)}")
  faces = faces_lib.FaceSource(teachers.face_detector)
  out = []
  for f in fields:
    if not any(f in a.fields for a in out):
      out.append(_build(ANNOTATORS[f], teachers, faces))
  return tuple(out)


def _build(cls, teachers: Teachers, faces):
  """An annotator's inputs are named after the Teachers they come from (and `faces`)."""
  kwargs = {}
  for field in dataclasses.fields(cls):
    kwargs[field.name] = faces if field.name == "faces" else getattr(teachers, field.name)
    if kwargs[field.name] is None and field.default is dataclasses.MISSING:
      raise ValueError(f"record fields {list(cls.fields)} need the teacher {field.name!r}")
  return cls(**kwargs)


def for_method(method: str, teachers: Teachers) -> tuple:
  """The annotators of a method's record fields, plus text_embeds when there is a text encoder."""
  text = ("text_embeds",) if teachers.encode_text is not None else ()
  return for_fields(records.method_fields(method) + text, teachers)
