"""Training records: one msgpack map per clip, stored in ArrayRecord files that grain reads by index.

A record maps str keys to str/int/float/bool or numpy arrays. Arrays are msgpack ext type 1 whose
payload is `np.save` bytes (dtype and shape kept exactly, no pickle). See docs/data.md for the keys.
"""
import glob
import io
import os

import msgpack
import numpy as np

SCHEMA_VERSION = 1
_NDARRAY_EXT = 1

# Keys every annotated clip has; text_embeds (L, D) is present when a text encoder was given.
REQUIRED_KEYS = ("schema_version", "clip_id", "caption", "num_frames", "fps", "height", "width",
                 "video_latents", "depth_latents", "image_latents", "image_noise_sigma",
                 "face_embeds", "face_present", "face_boxes", "face_masks")


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


def check_record(record: dict, name: str = "record") -> dict:
  """Raises RecordError naming the missing keys; returns the record."""
  missing = [k for k in REQUIRED_KEYS if k not in record]
  if missing:
    raise RecordError(f"{name}: missing keys {missing}; expected schema v{SCHEMA_VERSION} keys "
                      f"{list(REQUIRED_KEYS)}")
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
