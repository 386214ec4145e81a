"""Training records: one msgpack map per clip, stored in ArrayRecord files that grain reads by index.

A record maps str keys to str/int/float/bool or numpy arrays. Arrays are msgpack ext type 1 whose
payload is `np.save` bytes (dtype and shape kept exactly, no pickle). See docs/data.md for the keys.
Which annotated fields a record must have depends on the method that trains on it: each method
declares its set in METHOD_FIELDS, and records are checked against it.
"""
import glob
import io
import os

import msgpack
import numpy as np

SCHEMA_VERSION = 1
_NDARRAY_EXT = 1

# Keys every record has: what the clip is and the clip spec that produced it.
CLIP_KEYS = ("schema_version", "clip_id", "caption", "num_frames", "fps", "height", "width")
# The annotated fields each method trains on, in record order (data_pipelines/annotators.py writes
# them); text_embeds (L, D) is added to any of them when a text encoder was given.
METHOD_FIELDS = {
    "semrepa": ("video_latents", "depth_latents", "image_latents", "image_noise_sigma",
                "face_embeds", "face_present", "face_boxes", "face_masks"),
    # sem_repa_jax/methods/stableanimator/objective.py BATCH_FIELDS
    "stableanimator": ("video_latents", "reference_latents", "clip_embeds", "id_embeds",
                       "pose_images", "face_weight_masks"),
    # sem_repa_jax/methods/vividpose/objective.py BATCH_FIELDS (+ the optional face masks)
    "vividpose": ("video_latents", "reference_latents", "clip_embeds", "id_embeds", "pose_images",
                  "dense_maps", "face_weight_masks"),
}


class RecordError(ValueError):
  """A record file or record that does not match the schema."""


def _default(obj):
  if isinstance(obj, np.ndarray) or isinstance(obj, np.generic) and obj.shape == ():
    if isinstance(obj, np.generic):
      return obj.item()
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(obj), allow_pickle=False)
    return msgpack.ExtType(_NDARRAY_EXT, buf.getvalue())
  raise TypeError(f"cannot serialize {type(obj).__name__} in a record")


def _ext_hook(code, data):
  if code == _NDARRAY_EXT:
    return np.load(io.BytesIO(data), allow_pickle=False)
  return msgpack.ExtType(code, data)


def encode_record(record: dict) -> bytes:
  return msgpack.packb(record, default=_default, use_bin_type=True)


def decode_record(data: bytes, name: str = "record") -> dict:
  try:
    return msgpack.unpackb(data, ext_hook=_ext_hook, raw=False, strict_map_key=False)
  except (ValueError, msgpack.UnpackException) as e:
    raise RecordError(f"{name}: not a valid record ({e})") from e


def method_fields(method: str) -> tuple[str, ...]:
  """The annotated fields `method` trains on (METHOD_FIELDS)."""
  if method not in METHOD_FIELDS:
    raise ValueError(f"method {method!r}: no record fields declared; known: {sorted(METHOD_FIELDS)}")
  return METHOD_FIELDS[method]


def required_keys(method: str = "semrepa") -> tuple[str, ...]:
  """Every key a record for `method` must have: CLIP_KEYS, then the method's fields."""
  return CLIP_KEYS + method_fields(method)


def check_record(record: dict, name: str = "record", required=None) -> dict:
  """Raises RecordError naming the missing fields and the record; returns the record.

  required: the keys to check, default `required_keys('semrepa')`."""
  required = required_keys() if required is None else tuple(required)
  missing = [k for k in required if k not in record]
  if missing:
    raise RecordError(f"{name}: missing field{'s' if len(missing) > 1 else ''} "
                      f"{', '.join(map(repr, missing))} (schema v{SCHEMA_VERSION}; "
                      f"required: {', '.join(required)})")
  return record


def write_record_file(path: str, records) -> int:
  """Writes an ArrayRecord file of encoded records atomically; returns the count.

  group_size:1 makes every record its own chunk, so random access reads exactly one record.
  """
  from array_record.python.array_record_module import ArrayRecordWriter
  tmp = f"{path}.tmp{os.getpid()}"
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  writer = ArrayRecordWriter(tmp, "group_size:1")
  n = 0
  try:
    for r in records:
      writer.write(r if isinstance(r, bytes) else encode_record(r))
      n += 1
  finally:
    writer.close()
  os.replace(tmp, path)
  return n


def count_records(path: str) -> int:
  from array_record.python.array_record_module import ArrayRecordReader
  reader = ArrayRecordReader(path)
  try:
    return reader.num_records()
  finally:
    reader.close()


def record_files(path_or_pattern: str) -> list[str]:
  """A record file, a directory of *.array_record files, or a glob pattern -> sorted file list."""
  if os.path.isdir(path_or_pattern):
    files = glob.glob(os.path.join(path_or_pattern, "*.array_record"))
  else:
    files = glob.glob(path_or_pattern)
  if not files:
    raise RecordError(f"{path_or_pattern}: no .array_record files found")
  return sorted(files)
