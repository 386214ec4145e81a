"""Grain input pipelines over annotated records (training) and over raw videos (annotation, eval).

Two ways to iterate, both checkpointable:
- `clip_dataset(...)`: a grain MapDataset (shard -> shuffle -> repeat -> decode -> batch); its
  iterator's `get_state()` is a small JSON-able dict, `set_state()` resumes at the same element.
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
    self._source = gp.ArrayRecordDataSource(self.files)

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index) -> bytes:
    return self._source[index]

  def __repr__(self) -> str:
    return f"ClipRecordSource({len(self.files)} files, {len(self)} records)"


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
  so that multi-host steps stay in lock-step. Each epoch is reshuffled from the seed.
  """
  shard_index, shard_count = process_shard(shard_index, shard_count)
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
