"""Offline annotation: videos + teacher inputs -> training records, once, resumable, sharded.

For each clip of the manifest (this process's share: index % shard_count == shard_index):
  frames   = the clip sampled at spec.fps, resized to spec.height x spec.width (`read_clip`)
  fields   = each annotator's fields of the clip (data_pipelines/annotators.py: one annotator per
             group of record fields, the method's fields choose them), in the annotators' order
The clip's record (CLIP_KEYS, then the fields) is written to OUT/clips/<id>.msgpack (temp name +
os.replace); a clip whose file exists, decodes and has every field is skipped. Then this process
packs its clips into OUT/records/<split>-<shard>-of-<count>.array_record, again atomically.
"""
import dataclasses
import json
import os
import re

import numpy as np

from data_pipelines import depth as depth_lib
from data_pipelines import layout, records, video
from sem_repa_jax.models.pretrained import process_alive

SETTINGS_FILE = "annotation.json"     # in the output folder: the clip spec it was made with
_TMP = re.compile(r"\.msgpack\.tmp(\d+)$")


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
class Clip:
  """One clip being annotated: what annotators read."""
  entry: layout.ClipEntry
  root: str
  spec: ClipSpec
  indices: np.ndarray        # the source frames sampled
  source_hw: tuple           # (height, width) of the source video
  frames: np.ndarray         # uint8 (F, spec.height, spec.width, 3)
  # What several annotators need is computed once per clip (e.g. the face track), keyed by its
  # producer.
  shared: dict = dataclasses.field(default_factory=dict)

  def frame_indices(self, length: int, what: str) -> np.ndarray:
    """Which rows of a per-frame teacher input of `length` rows (the video's or the clip's
    length) are the sampled frames."""
    idx, n = self.indices, self.spec.num_frames
    if length > idx[-1]:
      return idx
    if length == n:
      return np.arange(n)
    raise AnnotationError(f"{what}: has {length} frames; expected the video's frame count "
                          f"(> {idx[-1]}) or the clip's {n}")

  def select_frames(self, arr: np.ndarray, what: str) -> np.ndarray:
    """The sampled frames of a per-frame teacher input of the video's or the clip's length."""
    return arr[self.frame_indices(len(arr), what)]


def read_clip(entry: layout.ClipEntry, root: str, spec: ClipSpec) -> Clip:
  """The clip's frames from its video, or from its frames folder (frame_<i>.png, as the
  official StableAnimator layout holds them), whose frames are consecutive at spec.fps."""
  if os.path.isdir(entry.path):
    n = len(video.frame_files(entry.path))
    idx = video.sample_indices(spec.fps, spec.num_frames, spec.fps, spec.start, n,
                               name=entry.path)
    raw = video.read_frame_folder(entry.path, idx)
  else:
    info = video.probe(entry.path)
    idx = video.sample_indices(info.fps, spec.num_frames, spec.fps, spec.start, info.num_frames,
                               name=entry.path)
    raw = video.read_frames(entry.path, idx)
  frames = video.resize_frames(raw, spec.height, spec.width, spec.resize_mode)
  return Clip(entry, root, spec, idx, raw.shape[1:3], frames)


def annotated_fields(annotators) -> tuple[str, ...]:
  return tuple(f for a in annotators for f in a.fields)


def annotate_clip(entry: layout.ClipEntry, root: str, spec: ClipSpec, annotators) -> dict:
  """Computes the record of one clip (see docs/data.md for the keys)."""
  clip = read_clip(entry, root, spec)
  rec = dict(schema_version=records.SCHEMA_VERSION, clip_id=entry.clip_id, caption=entry.caption,
             num_frames=spec.num_frames, fps=float(spec.fps), height=spec.height,
             width=spec.width)
  for a in annotators:
    out = a(clip)
    if tuple(out) != a.fields:
      raise AnnotationError(f"clip {entry.clip_id}: annotator {type(a).__name__} returned "
                            f"{list(out)}, expected {list(a.fields)}")
    rec.update(out)
  return rec


def _clip_file(out_dir: str, clip_id: str) -> str:
  return os.path.join(out_dir, "clips", clip_id + ".msgpack")


def _read_clip(path: str, required) -> bytes | None:
  """The clip's encoded record if the file exists and is a complete record, else None."""
  if not os.path.isfile(path):
    return None
  with open(path, "rb") as f:
    data = f.read()
  try:
    records.check_record(records.decode_record(data, path), path, required)
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


def _check_settings(out_dir: str, spec: ClipSpec, reannotate: bool, write: bool) -> None:
  """An output folder keeps the clip spec it was made with (SETTINGS_FILE); annotating into it
  with another is refused, unless `reannotate`, which recomputes every clip. (Other fields are
  not a conflict: a clip lacking a field asked for is recomputed.)"""
  path = os.path.join(out_dir, SETTINGS_FILE)
  mine = {"spec": dataclasses.asdict(spec)}
  if os.path.isfile(path) and not reannotate:
    with open(path) as f:
      made = json.load(f)
    if made["spec"] != mine["spec"]:
      was, now = made["spec"], mine["spec"]
      diff = ", ".join(f"{k} {was.get(k)!r} (now {now.get(k)!r})"
                       for k in sorted(set(was) | set(now)) if was.get(k) != now.get(k))
      raise AnnotationError(
          f"{out_dir} holds annotations made with other settings: {diff}; annotate into another "
          "output folder, or set annotate.reannotate=True to redo every clip")
  if write:
    os.makedirs(out_dir, exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
      json.dump(mine, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


def _remove_dead_temporaries(clips_dir: str) -> None:
  """`<id>.msgpack.tmp<pid>` files a killed annotation left (its process no longer runs)."""
  for name in os.listdir(clips_dir):
    m = _TMP.search(name)
    if m and not process_alive(int(m.group(1))):
      os.remove(os.path.join(clips_dir, name))


def annotate_dataset(root: str, out_dir: str, spec: ClipSpec, annotators, *,
                     shard_index: int = 0, shard_count: int = 1, split: str | None = None,
                     progress=None, reannotate: bool = False) -> dict:
  """Annotates this process's clips and packs them into one ArrayRecord file. Returns a summary.

  annotators: what writes the record fields, e.g. `annotators.for_method('semrepa', teachers)`.
  reannotate: recompute every clip (e.g. after changing the clip spec); otherwise an output folder
  made with another spec or other fields is refused."""
  if not 0 <= shard_index < shard_count:
    raise AnnotationError(f"shard_index {shard_index} of shard_count {shard_count}: expected "
                          "0 <= shard_index < shard_count")
  required = records.CLIP_KEYS + annotated_fields(annotators)
  entries = layout.read_manifest(root, split)
  if not entries:
    raise AnnotationError(f"{os.path.join(root, 'manifest.jsonl')}: no clips"
                          + (f" of split {split!r}" if split else ""))
  _check_settings(out_dir, spec, reannotate, write=shard_index == 0)
  mine = entries[shard_index::shard_count]
  os.makedirs(os.path.join(out_dir, "clips"), exist_ok=True)
  _remove_dead_temporaries(os.path.join(out_dir, "clips"))
  done, skipped = 0, 0
  for e in (mine if progress is None else progress(mine)):
    path = _clip_file(out_dir, e.clip_id)
    if not reannotate and _read_clip(path, required) is not None:
      skipped += 1
      continue
    try:
      rec = annotate_clip(e, root, spec, annotators)
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
    records.write_record_file(rec_path, (_read_clip(p, required) for p in clip_paths))
  return dict(clips=len(mine), annotated=done, skipped=skipped, record_file=rec_path,
              packed=not fresh)
