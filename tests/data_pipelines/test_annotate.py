"""The annotator on a small synthetic dataset: schema, idempotence, crash safety, host sharding."""
import os

import numpy as np
import pytest

from data_pipelines import annotate, codec, depth, loader, records, synthetic

SPEC = annotate.ClipSpec(num_frames=5, fps=8.0, height=32, width=48)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("syn"))
  synthetic.write_dataset(root, num_clips=5, num_frames=5, height=32, width=48, seed=2,
                          num_identities=3, vertical_fraction=0.4)
  return root


def _teachers(fail_on=None):
  enc = codec.PatchCodec(seed=0)
  calls = {"n": 0}

  def encode_video(x):
    calls["n"] += 1
    if fail_on is not None and calls["n"] == fail_on:
      raise RuntimeError("simulated crash inside a clip")
    return enc.encode_video(x)
  return annotate.Teachers(encode_video=encode_video)


def _decoded(out):
  src = loader.ClipRecordSource(os.path.join(out, "records"))
  return {r["clip_id"]: r for r in (records.decode_record(src[i]) for i in range(len(src)))}


def test_records_follow_the_schema(dataset, tmp_path):
  out = str(tmp_path / "ann")
  annotate.annotate_dataset(dataset, out, SPEC, _teachers())
  recs = _decoded(out)
  assert len(recs) == 5
  for r in recs.values():
    records.check_record(r)
    assert r["video_latents"].shape == (2, 4, 6, 16) and r["video_latents"].dtype == np.float32
    assert r["depth_latents"].shape == (2, 4, 6, 16) and r["image_latents"].shape == (1, 4, 6, 16)
    assert r["face_embeds"].shape == (5, synthetic.IDENTITY_DIM)
    norms = np.linalg.norm(r["face_embeds"], axis=-1)
    np.testing.assert_allclose(norms[r["face_present"]], 1.0, atol=1e-5)
    assert np.all(norms[~r["face_present"]] == 0)
    assert r["face_masks"].shape == (5, 4, 6) and 0.0 < r["image_noise_sigma"] < 1.0


def test_rerun_is_idempotent_and_skips(dataset, tmp_path):
  out = str(tmp_path / "ann")
  annotate.annotate_dataset(dataset, out, SPEC, _teachers())
  first = {f: open(os.path.join(out, "clips", f), "rb").read()
           for f in os.listdir(os.path.join(out, "clips"))}
  summary = annotate.annotate_dataset(dataset, out, SPEC, _teachers())
  assert summary["annotated"] == 0 and summary["skipped"] == 5 and not summary["packed"]
  again = {f: open(os.path.join(out, "clips", f), "rb").read() for f in first}
  assert again == first


def test_interrupted_run_leaves_no_corrupt_files_and_resumes(dataset, tmp_path):
  clean, out = str(tmp_path / "clean"), str(tmp_path / "crash")
  annotate.annotate_dataset(dataset, clean, SPEC, _teachers())
  with pytest.raises(RuntimeError, match="simulated crash"):
    annotate.annotate_dataset(dataset, out, SPEC, _teachers(fail_on=8))  # 3 encodes per clip
  files = sorted(os.listdir(os.path.join(out, "clips")))
  assert len(files) == 2 and all(f.endswith(".msgpack") for f in files)   # no temp leftovers
  for f in files:
    records.check_record(records.decode_record(open(os.path.join(out, "clips", f), "rb").read()))
  assert not os.path.exists(os.path.join(out, "records"))
  # A file cut short by a crash of a non-atomic writer is recomputed, not trusted.
  with open(os.path.join(out, "clips", files[0]), "r+b") as fh:
    fh.truncate(100)
  summary = annotate.annotate_dataset(dataset, out, SPEC, _teachers())
  assert summary["annotated"] == 4 and summary["skipped"] == 1
  a, b = _decoded(clean), _decoded(out)
  assert a.keys() == b.keys()
  for k in a:
    for key in ("video_latents", "depth_latents", "image_latents", "face_embeds"):
      np.testing.assert_array_equal(a[k][key], b[k][key])


def test_hosts_split_clips_disjointly(dataset, tmp_path):
  out = str(tmp_path / "ann")
  ids = []
  for p in range(2):
    s = annotate.annotate_dataset(dataset, out, SPEC, _teachers(), shard_index=p, shard_count=2)
    ids.append(set(records.decode_record(r)["clip_id"]
                   for r in loader.ClipRecordSource(s["record_file"])._source))
  assert not ids[0] & ids[1] and len(ids[0] | ids[1]) == 5


def test_colorized_depth_is_brighter_when_closer():
  luma = depth.INFERNO.astype(float) @ [0.299, 0.587, 0.114]
  assert np.all(np.diff(luma) > 0)                 # the table's brightness is monotonic
  d = np.array([[[1.0, 2.0], [4.0, 8.0]]], np.float32)
  rgb = depth.colorize(d)
  np.testing.assert_array_equal(rgb[0, 0, 0], depth.INFERNO[255])
  np.testing.assert_array_equal(rgb[0, 1, 1], depth.INFERNO[0])
  np.testing.assert_array_equal(depth.colorize(10.0 - d, disparity=True), rgb)


def test_annotate_job_end_to_end(tmp_path):
  from configs import annotate as annotate_config
  from sem_repa_jax.jobs import annotate as annotate_job
  c = annotate_config.get_config()
  c.workdir = str(tmp_path / "run")
  c.data.root = str(tmp_path / "syn")
  c.data.synthetic_clips, c.data.num_frames = 3, 5
  c.data.synthetic_height, c.data.synthetic_width = 48, 32     # vertical source videos
  c.data.height, c.data.width = 32, 48
  c.progress_bar = False
  annotate_job.run(c)
  recs = _decoded(os.path.join(c.workdir, "annotations"))
  assert len(recs) == 3
  r = next(iter(recs.values()))
  assert r["video_latents"].shape == (2, 4, 6, 16)
  # Vertical 48x32 sources fit the height (32x21) and are centered in width 48: columns 13..33,
  # so face boxes, mapped through the same geometry, stay inside them.
  boxes = r["face_boxes"][r["face_present"]]
  assert len(boxes) and np.all(boxes[:, 0] >= 13) and np.all(boxes[:, 2] <= 34)


def test_raw_video_source_reads_the_manifest(dataset):
  from data_pipelines import layout
  entries = layout.read_manifest(dataset)
  src = loader.VideoClipSource(entries, num_frames=3, fps=4.0, height=32, width=48)
  batch = next(iter(loader.clip_dataset(src, seed=0, batch_size=2, shard_index=0, shard_count=1,
                                        decode=False)))
  assert batch["video"].shape == (2, 3, 32, 48, 3) and batch["video"].dtype == np.uint8
  assert set(batch["clip_id"]) <= {e.clip_id for e in entries}
