"""Offline annotation: videos + teacher inputs -> training records, once, resumable, sharded.

For each clip of the manifest (this process's share: index % shard_count == shard_index):
  frames   = the clip sampled at spec.fps, resized to spec.height x spec.width (video.load_clip)
  depth    = teacher depth (precomputed file or callable) -> same sampling/resize -> colorized
             (brighter = closer, inferno)
  faces    = boxes/present/masks (faces file or detector) -> embeddings (embedder or the faces
             file's identity vector), L2-normalized, zero where absent
  latents  = encode_video(frames), encode_video(colorized depth), and the latents of the first
             frame plus pixel noise of sigma = exp(N(-3, 0.5)) drawn from a per-clip seed
  text     = encode_text(caption) when given
The clip's record is written to OUT/clips/<id>.msgpack (temp name + os.replace); a clip whose file
exists and decodes is skipped. Then this process packs its clips into
OUT/records/<split>-<shard>-of-<count>.array_record, again atomically.
"""
import dataclasses
import os
import zlib
from typing import Callable, Optional

import numpy as np

from data_pipelines import depth as depth_lib
from data_pipelines import layout, records, video


class AnnotationError(ValueError):
  """A clip that cannot be annotated; the message names the clip and the input at fault."""


@dataclasses.dataclass(frozen=True)
class ClipSpec:
  num_frames: int = 49
  fps: float = 8.0
  height: int = 480
  width: int = 720
  resize_mode: str = "auto"
  start: float = 0.0
  disparity: bool = False     # teacher depth files hold disparity (larger = closer)
  mask_stride: int = 8        # face_masks are stored as coverage of mask_stride^2 pixel cells
  seed: int = 0               # image-noise seed; combined with the clip id


@dataclasses.dataclass
class Teachers:
  """The pluggable models. Only encode_video is required."""
  encode_video: Callable[[np.ndarray], np.ndarray]
  # (frames uint8 (F,H,W,3), boxes (F,4)) -> (embeds (F,D), present (F,)); None: the faces file's
  # identity vector is the embedding (synthetic data, where it is exact).
  embed_faces: Optional[Callable] = None
  # frames uint8 (F,H,W,3) -> (boxes (F,4) xyxy, present (F,)); None: ROOT/faces/<id>.npz.
  detect_faces: Optional[Callable] = None
  # frames uint8 (F,H,W,3) -> depth (F,H,W), larger = farther; None: ROOT/depth/<id>.npy|.npz.
  depth: Optional[Callable] = None
  # caption -> (L, D) array; None: no text_embeds key.
  encode_text: Optional[Callable] = None


def clip_seed(seed: int, clip_id: str) -> np.random.Generator:
  """Per-clip randomness that does not depend on sharding or on the order clips are processed."""
  return np.random.default_rng([seed, zlib.crc32(clip_id.encode())])


def _select_frames(arr: np.ndarray, idx: np.ndarray, num_frames: int, what: str) -> np.ndarray:
  if len(arr) > idx[-1]:
    return arr[idx]
  if len(arr) == num_frames:
    return arr
  raise AnnotationError(f"{what}: has {len(arr)} frames; expected the video's frame count "
                        f"(> {idx[-1]}) or the clip's {num_frames}")


def _coverage(masks: np.ndarray, stride: int) -> np.ndarray:
  f, h, w = masks.shape
  m = masks[:, :h - h % stride, :w - w % stride].astype(np.float32)
  return m.reshape(f, h // stride, stride, w // stride, stride).mean((2, 4)).astype(np.float16)


def annotate_clip(entry: layout.ClipEntry, root: str, spec: ClipSpec, teachers: Teachers) -> dict:
  """Computes the record of one clip (see docs/data.md for the keys)."""
  info = video.probe(entry.path)
  idx = video.sample_indices(info.fps, spec.num_frames, spec.fps, spec.start, info.num_frames,
                             name=entry.path)
  raw = video.read_frames(entry.path, idx)
  src_h, src_w = raw.shape[1:3]
  frames = video.resize_frames(raw, spec.height, spec.width, spec.resize_mode)

  if teachers.depth is not None:
    d = np.asarray(teachers.depth(frames), np.float32)
    dname = f"depth teacher output for {entry.clip_id}"
    if d.shape != frames.shape[:3]:
      raise AnnotationError(f"{dname}: shape {d.shape}, expected {frames.shape[:3]}")
  else:
    dpath = layout.depth_path(root, entry.clip_id)
    if dpath is None:
      raise AnnotationError(f"clip {entry.clip_id}: no depth file {root}/depth/{entry.clip_id}"
                            f".npy|.npz and no depth teacher")
    d = _select_frames(depth_lib.load_depth(dpath), idx, spec.num_frames, dpath)
    far = d.min() if spec.disparity else d.max()
    d = video.resize_frames(d, spec.height, spec.width, spec.resize_mode, pad_value=far)
  depth_rgb = depth_lib.colorize(d, spec.disparity)

  fpath = layout.faces_path(root, entry.clip_id)
  faces = dict(np.load(fpath)) if fpath else {}
  if teachers.detect_faces is not None:
    boxes, present = teachers.detect_faces(frames)
    boxes, present = np.asarray(boxes, np.float32), np.asarray(present, bool)
    masks = None
  elif "boxes" in faces:
    boxes = video.resize_boxes(_select_frames(faces["boxes"], idx, spec.num_frames, fpath),
                               src_h, src_w, spec.height, spec.width, spec.resize_mode)
    present = _select_frames(faces["present"], idx, spec.num_frames, fpath).astype(bool)
    masks = faces.get("masks")
    if masks is not None:
      masks = _select_frames(masks, idx, spec.num_frames, fpath).astype(np.uint8)
      masks = video.resize_frames(masks, spec.height, spec.width, spec.resize_mode) > 0
  else:
    raise AnnotationError(f"clip {entry.clip_id}: no faces file {root}/faces/{entry.clip_id}.npz "
                          f"with 'boxes' and no face detector")
  if masks is None:   # box-shaped masks, as StableAnimator builds them from detections
    ys, xs = np.arange(spec.height)[None, :, None], np.arange(spec.width)[None, None, :]
    b = boxes[:, :, None, None]
    masks = (xs >= b[:, 0]) & (xs < b[:, 2]) & (ys >= b[:, 1]) & (ys < b[:, 3])
    masks &= present[:, None, None]
  if teachers.embed_faces is not None:
    embeds, ok = teachers.embed_faces(frames, boxes)
    embeds, present = np.asarray(embeds, np.float32), present & np.asarray(ok, bool)
  elif "identity" in faces:
    embeds = np.tile(faces["identity"].astype(np.float32)[None], (spec.num_frames, 1))
  else:
    raise AnnotationError(f"clip {entry.clip_id}: no face embedder and no 'identity' in {fpath}")
  norm = np.linalg.norm(embeds, axis=-1, keepdims=True)
  embeds = np.where(present[:, None], embeds / np.maximum(norm, 1e-12), 0).astype(np.float32)

  rng = clip_seed(spec.seed, entry.clip_id)
  sigma = float(np.exp(rng.normal(-3.0, 0.5)))
  x = video.to_model_range(frames)
  first = x[:1] + sigma * rng.standard_normal(x[:1].shape).astype(np.float32)
  rec = dict(
      schema_version=records.SCHEMA_VERSION, clip_id=entry.clip_id, caption=entry.caption,
      num_frames=spec.num_frames, fps=float(spec.fps), height=spec.height, width=spec.width,
      video_latents=np.asarray(teachers.encode_video(x), np.float32),
      depth_latents=np.asarray(teachers.encode_video(video.to_model_range(depth_rgb)), np.float32),
      image_latents=np.asarray(teachers.encode_video(first), np.float32),
      image_noise_sigma=sigma, face_embeds=embeds, face_present=present,
      face_boxes=boxes.astype(np.float32), face_masks=_coverage(masks, spec.mask_stride))
  if teachers.encode_text is not None:
    rec["text_embeds"] = np.asarray(teachers.encode_text(entry.caption))
  return rec


def _clip_file(out_dir: str, clip_id: str) -> str:
  return os.path.join(out_dir, "clips", clip_id + ".msgpack")


def _read_clip(path: str) -> bytes | None:
  """The clip's encoded record if the file exists and is a complete record, else None."""
  if not os.path.isfile(path):
    return None
  with open(path, "rb") as f:
    data = f.read()
  try:
    records.check_record(records.decode_record(data, path), path)
  except records.RecordError:
    return None
  return data


def _write_atomic(path: str, data: bytes) -> None:
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "wb") as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def annotate_dataset(root: str, out_dir: str, spec: ClipSpec, teachers: Teachers, *,
                     shard_index: int = 0, shard_count: int = 1, split: str | None = None,
                     progress=None) -> dict:
  """Annotates this process's clips and packs them into one ArrayRecord file. Returns a summary."""
  entries = layout.read_manifest(root, split)
  mine = entries[shard_index::shard_count]
  os.makedirs(os.path.join(out_dir, "clips"), exist_ok=True)
  done, skipped = 0, 0
  for e in (mine if progress is None else progress(mine)):
    path = _clip_file(out_dir, e.clip_id)
    if _read_clip(path) is not None:
      skipped += 1
      continue
    try:
      rec = annotate_clip(e, root, spec, teachers)
    except (video.VideoError, depth_lib.DepthError) as err:
      raise AnnotationError(f"clip {e.clip_id} ({e.path}): {err}") from err
    _write_atomic(path, records.encode_record(rec))
    done += 1
  rec_path = os.path.join(out_dir, "records",
                          f"{split or 'all'}-{shard_index:05d}-of-{shard_count:05d}.array_record")
  clip_paths = [_clip_file(out_dir, e.clip_id) for e in mine]
  fresh = (os.path.isfile(rec_path) and done == 0
           and records.count_records(rec_path) == len(mine)
           and all(os.path.getmtime(p) <= os.path.getmtime(rec_path) for p in clip_paths))
  if not fresh:
    records.write_record_file(rec_path, (_read_clip(p) for p in clip_paths))
  return dict(clips=len(mine), annotated=done, skipped=skipped, record_file=rec_path,
              packed=not fresh)
