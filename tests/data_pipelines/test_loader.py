"""Grain pipelines over record files: determinism, resume from saved state, disjoint sharding."""
import numpy as np
import pytest

from data_pipelines import loader, records


@pytest.fixture(scope="module")
def record_dir(tmp_path_factory):
  d = tmp_path_factory.mktemp("records")
  for shard in range(2):      # two files, as two annotation processes would write
    records.write_record_file(str(d / f"all-{shard:05d}-of-00002.array_record"), [
        {"clip_id": f"c{i:02d}", "caption": f"clip {i}", "index": i,
         "video_latents": np.full((2, 3, 4, 5), i, np.float32),
         "face_present": np.arange(3) < i % 4, "face_masks": np.full((3, 2), i / 10, np.float16)}
        for i in range(shard * 11, shard * 11 + 11)])
  return str(d)


def _ids(batches):
  return [int(i) for b in batches for i in b["index"]]


def test_record_round_trip_keeps_dtypes(record_dir):
  src = loader.ClipRecordSource(record_dir)
  assert len(src) == 22
  rec = records.decode_record(src[13])
  assert rec["clip_id"] == "c13" and rec["index"] == 13
  assert rec["video_latents"].dtype == np.float32 and rec["video_latents"].shape == (2, 3, 4, 5)
  assert rec["face_present"].dtype == np.bool_ and rec["face_masks"].dtype == np.float16
  np.testing.assert_array_equal(rec["face_masks"], np.full((3, 2), 1.3, np.float16))


def test_seeded_shuffle_is_deterministic(record_dir):
  src = loader.ClipRecordSource(record_dir)
  make = lambda seed: list(loader.clip_dataset(src, seed=seed, batch_size=4, shard_index=0,  # noqa: E731
                                               shard_count=1))
  a, b, c = make(3), make(3), make(4)
  assert _ids(a) == _ids(b)
  assert _ids(a) != _ids(c)
  # 22 records in batches of 4: five batches of distinct records, the last partial batch dropped.
  assert len(set(_ids(a))) == 20 and set(_ids(a)) <= set(range(22))


def test_map_dataset_resumes_at_same_element(record_dir):
  src = loader.ClipRecordSource(record_dir)
  ds = loader.clip_dataset(src, seed=7, batch_size=3, shard_index=0, shard_count=1, num_epochs=2)
  it = iter(ds.to_iter_dataset())
  for _ in range(4):
    next(it)
  saved = loader.state_to_bytes(it.get_state())
  expected = [next(it) for _ in range(6)]          # crosses the epoch boundary
  it2 = iter(loader.clip_dataset(src, seed=7, batch_size=3, shard_index=0, shard_count=1,
                                 num_epochs=2).to_iter_dataset())
  it2.set_state(loader.state_from_bytes(saved, it2.get_state()))
  got = [next(it2) for _ in range(6)]
  assert _ids(got) == _ids(expected)
  np.testing.assert_array_equal(got[-1]["video_latents"], expected[-1]["video_latents"])


def test_data_loader_resumes_at_same_element(record_dir):
  src = loader.ClipRecordSource(record_dir)
  make = lambda: loader.clip_data_loader(src, seed=1, batch_size=2, shard_index=0,  # noqa: E731
                                         shard_count=1, worker_count=0)
  it = iter(make())
  next(it), next(it)
  saved = it.get_state()
  assert isinstance(saved, bytes)
  expected = [next(it) for _ in range(3)]
  it2 = iter(make())
  it2.set_state(saved)
  assert _ids([next(it2) for _ in range(3)]) == _ids(expected)


@pytest.mark.parametrize("kind", ["map_dataset", "data_loader"])
def test_processes_get_disjoint_equal_shares(record_dir, kind):
  src = loader.ClipRecordSource(record_dir)
  shares = []
  for p in range(3):
    if kind == "map_dataset":
      batches = loader.clip_dataset(src, seed=5, batch_size=1, shard_index=p, shard_count=3)
    else:
      batches = loader.clip_data_loader(src, seed=5, batch_size=1, shard_index=p, shard_count=3)
    shares.append(set(_ids(list(batches))))
  assert [len(s) for s in shares] == [7, 7, 7]
  assert not (shares[0] & shares[1] or shares[0] & shares[2] or shares[1] & shares[2])


@pytest.mark.parametrize("buffer_size", [0, 4])
def test_prefetched_iterator_resumes_at_same_batch(record_dir, buffer_size):
  src = loader.ClipRecordSource(record_dir)
  make = lambda: loader.Prefetched(loader.clip_dataset(  # noqa: E731
      src, seed=7, batch_size=3, shard_index=0, shard_count=1, num_epochs=2), buffer_size)
  plain = [b for b in loader.clip_dataset(src, seed=7, batch_size=3, shard_index=0,
                                          shard_count=1, num_epochs=2)]
  it = iter(make())
  head = [next(it) for _ in range(3)]
  saved = loader.state_to_bytes(it.get_state())
  assert saved == b'{"next_index": 3}'      # batches returned, not batches read ahead
  expected = [next(it) for _ in range(8)]    # crosses the epoch boundary
  it2 = iter(make())
  next(it2)                                  # a live iterator with a filled buffer is moved back
  it2.set_state(loader.state_from_bytes(saved, it2.get_state()))
  got = [next(it2) for _ in range(8)]
  assert _ids(head + got) == _ids(head + expected) == _ids(plain[:11])
  for g, e in zip(got, expected):
    np.testing.assert_array_equal(g["video_latents"], e["video_latents"])
  assert make()[2]["clip_id"].tolist() == plain[2]["clip_id"].tolist()   # indexing unchanged


def test_prefetched_iterator_resumes_through_a_checkpoint(record_dir, tmp_path):
  import jax
  from sem_repa_jax.training.checkpoint import Checkpointer
  src = loader.ClipRecordSource(record_dir)
  make = lambda: iter(loader.Prefetched(loader.clip_dataset(  # noqa: E731
      src, seed=2, batch_size=2, shard_index=0, shard_count=1, num_epochs=None), 5))
  it = make()
  for _ in range(4):
    next(it)
  tree = {"w": np.arange(3, dtype=np.float32)}
  ckpt = Checkpointer(tmp_path, keep=1, async_save=False)
  ckpt.save(4, tree, it)
  ckpt.wait()
  expected = [next(it) for _ in range(12)]   # 22 records / 2: past the first epoch
  it2 = make()
  dev = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  ckpt.restore({"w": jax.ShapeDtypeStruct((3,), np.float32, sharding=dev)}, data_iterator=it2)
  assert _ids([next(it2) for _ in range(12)]) == _ids(expected)


def test_missing_field_names_the_record_file(record_dir):
  src = loader.ClipRecordSource(record_dir)
  with pytest.raises(records.RecordError) as e:
    loader.clip_dataset(src, seed=0, batch_size=2, shard_index=0, shard_count=1,
                        keys=["video_latents", "depth_latents"])
  msg = str(e.value)
  assert "\n" not in msg and msg.startswith(record_dir)
  assert "all-00000-of-00002.array_record (record 0): missing field 'depth_latents' (" in msg
