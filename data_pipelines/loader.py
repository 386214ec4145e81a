"""Grain input pipelines over annotated records (training) and over raw videos (annotation, eval).

Two ways to iterate, both checkpointable:
- `clip_dataset(...)`: a grain MapDataset (shard -> shuffle -> repeat -> decode -> batch); its
  iterator's `get_state()` is a small JSON-able dict, `set_state()` resumes at the same element.
  `Prefetched(ds, n)` makes iterating it read n batches ahead on host threads, same state.
- `clip_data_loader(...)`: a grain DataLoader with worker processes; its iterator's `get_state()` is
  JSON bytes. Both shard by process (jax.process_index/count unless given), so hosts never overlap.
"""
import json

import grain
import grain.python as gp
import numpy as np

from data_pipelines import records, video
from data_pipelines.layout import ClipEntry


class ClipRecordSource(gp.RandomAccessDataSource):
  """Encoded records from ArrayRecord files (a file, a directory, or a glob), read by index."""

  def __init__(self, path_or_pattern: str):
    self.files = records.record_files(path_or_pattern)
    try:
      self._source = gp.ArrayRecordDataSource(self.files)
    except Exception as e:  # pylint: disable=broad-except  (the reader names no file)
      raise records.RecordError(f"{_unreadable(self.files) or path_or_pattern}: not a readable "
                                f"ArrayRecord file ({type(e).__name__}: {e})") from None

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index) -> bytes:
    return self._source[index]

  def __repr__(self) -> str:
    return f"ClipRecordSource({len(self.files)} files, {len(self)} records)"

  def check_fields(self, required) -> None:
    """Raises RecordError naming the file and the field when a file's first record lacks one of
    `required` (the annotator writes the same fields into every record of a run), or when two
    files hold those fields with other shapes (annotations of another clip size: they cannot
    batch together)."""
    from array_record.python.array_record_module import ArrayRecordReader
    first_file, first_shapes = None, None
    for path in self.files:
      reader = ArrayRecordReader(path)
      try:
        first = reader.read([0])[0] if reader.num_records() else None
      finally:
        reader.close()
      if first is None:
        continue
      rec = records.decode_record(first, path)
      records.check_record(rec, f"{path} (record 0)", required)
      here = {k: np.shape(rec[k]) for k in required if np.ndim(rec[k])}
      if first_file is None:
        first_file, first_shapes = path, here
      elif here != first_shapes:
        diff = ", ".join(f"{k} {first_shapes.get(k)} vs {here[k]}" for k in here
                         if here[k] != first_shapes.get(k))
        raise records.RecordError(f"{path} and {first_file} hold clips of other sizes ({diff}); "
                                  "train on records annotated with one clip spec")


def _unreadable(files) -> str | None:
  """The first of `files` that the ArrayRecord reader cannot open."""
  from array_record.python.array_record_module import ArrayRecordReader
  for path in files:
    try:
      ArrayRecordReader(path).close()
    except Exception:  # pylint: disable=broad-except
      return path
  return None


class DecodeRecord(gp.MapTransform):
  """bytes -> dict of numpy arrays and scalars; `keys` keeps only what training needs."""

  def __init__(self, keys=None):
    self.keys = None if keys is None else tuple(keys)

  def map(self, data: bytes) -> dict:
    rec = records.decode_record(data)
    if self.keys is None:
      return rec
    missing = [k for k in self.keys if k not in rec]
    if missing:
      raise records.RecordError(f"record {rec.get('clip_id')!r} lacks keys {missing}")
    return {k: rec[k] for k in self.keys}


class VideoClipSource(gp.RandomAccessDataSource):
  """Manifest entries -> decoded clips {clip_id, caption, video uint8 (F, H, W, 3)}, read by index."""

  def __init__(self, entries: list[ClipEntry], num_frames: int, fps: float, height: int,
               width: int, mode: str = "auto"):
    self.entries = list(entries)
    self.num_frames, self.fps, self.height, self.width, self.mode = (num_frames, fps, height,
                                                                     width, mode)

  def __len__(self) -> int:
    return len(self.entries)

  def __getitem__(self, index) -> dict:
    e = self.entries[int(index)]
    frames = video.load_clip(e.path, self.num_frames, self.fps, self.height, self.width,
                             mode=self.mode)
    return {"clip_id": e.clip_id, "caption": e.caption, "video": frames}


def process_shard(shard_index: int | None = None, shard_count: int | None = None):
  """(index, count) of this process; defaults to jax.process_index() / jax.process_count()."""
  if shard_index is None or shard_count is None:
    import jax
    shard_index = jax.process_index() if shard_index is None else shard_index
    shard_count = jax.process_count() if shard_count is None else shard_count
  if not 0 <= shard_index < shard_count:
    raise ValueError(f"shard_index {shard_index} is not in [0, shard_count={shard_count})")
  return shard_index, shard_count


def clip_dataset(source, *, seed: int, batch_size: int, shard_index: int | None = None,
                 shard_count: int | None = None, num_epochs: int | None = 1, shuffle: bool = True,
                 drop_remainder: bool = True, keys=None, decode: bool = True) -> grain.MapDataset:
  """Shard -> shuffle(seed) -> repeat -> decode -> batch, as a MapDataset.

  Every process takes the same number of records (the remainder of len % shard_count is dropped)
  so that multi-host steps stay in lock-step. Each epoch is reshuffled from the seed. Records of a
  ClipRecordSource lacking one of `keys` are an error naming the file, before any step.
  """
  shard_index, shard_count = process_shard(shard_index, shard_count)
  if decode and keys is not None and isinstance(source, ClipRecordSource):
    source.check_fields(keys)
  n = len(source) - len(source) % shard_count
  if n < shard_count:
    raise ValueError(f"{source!r} has {len(source)} records; cannot give {shard_count} processes "
                     f"one each")
  ds = grain.MapDataset.source(source)[shard_index:n:shard_count]
  if shuffle:
    ds = ds.seed(seed).shuffle()
  if num_epochs != 1:
    ds = ds.repeat(num_epochs)
  if decode:
    ds = ds.map(DecodeRecord(keys))
  return ds.batch(batch_size, drop_remainder=drop_remainder)


class Prefetched(grain.MapDataset):
  """`parent`, whose iterators read `buffer_size` elements (batches) ahead on as many host threads
  (grain's PrefetchIterDataset), so decoding overlaps the training step; 0 reads on the caller's
  thread. Indexing is the parent's. An iterator's state is the index of the next element it
  returns, not of the next one read, so a run resumed from a saved state yields the same batches."""

  def __init__(self, parent: grain.MapDataset, buffer_size: int):
    super().__init__(parent)
    if buffer_size < 0:
      raise ValueError(f"prefetch buffer_size={buffer_size}: expected >= 0 batches")
    self.buffer_size = int(buffer_size)

  def __len__(self) -> int:
    return len(self._parent)

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    return self._parent[index]

  def __iter__(self):
    options = grain.ReadOptions(num_threads=self.buffer_size, prefetch_buffer_size=self.buffer_size)
    return self.to_iter_dataset(options).__iter__()

  def __str__(self) -> str:
    return f"Prefetched(buffer_size={self.buffer_size})"


def clip_data_loader(source, *, seed: int, batch_size: int, worker_count: int = 0,
                     shard_index: int | None = None, shard_count: int | None = None,
                     num_epochs: int | None = 1, shuffle: bool = True,
                     drop_remainder: bool = True, keys=None,
                     worker_buffer_size: int = 2) -> grain.DataLoader:
  """The same records through a grain DataLoader (worker processes decode in parallel)."""
  shard_index, shard_count = process_shard(shard_index, shard_count)
  if worker_count > 0:
    from absl import flags
    # Grain workers read absl flags; outside an absl app (notebooks, scripts) they are unparsed.
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
  sampler = gp.IndexSampler(
      num_records=len(source), shuffle=shuffle, seed=seed, num_epochs=num_epochs,
      shard_options=gp.ShardOptions(shard_index, shard_count, drop_remainder=True))
  return grain.DataLoader(
      data_source=source, sampler=sampler,
      operations=[DecodeRecord(keys), gp.Batch(batch_size, drop_remainder=drop_remainder)],
      worker_count=worker_count, worker_buffer_size=worker_buffer_size)


def state_to_bytes(state) -> bytes:
  """An iterator state (dict from a MapDataset iterator, or bytes from a DataLoader) as bytes."""
  if isinstance(state, bytes):
    return state
  return json.dumps(state, sort_keys=True).encode()


def state_from_bytes(data: bytes, like) -> object:
  """Inverse of `state_to_bytes`, shaped like `like` (a state of the same kind of iterator)."""
  return data if isinstance(like, bytes) else json.loads(data.decode())


def numpy_batch(batch: dict) -> dict:
  """Drops string fields (clip_id, caption) that cannot go to devices; keeps numeric arrays."""
  return {k: v for k, v in batch.items() if isinstance(v, np.ndarray) and v.dtype.kind in "biuf"}
