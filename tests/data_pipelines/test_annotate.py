"""The annotator on a small synthetic dataset: schema, idempotence, crash safety, host sharding."""
import os

import numpy as np
import pytest

from data_pipelines import annotate, annotators, loader, records, synthetic, teachers

SPEC = annotate.ClipSpec(num_frames=5, fps=8.0, height=32, width=48)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("syn"))
  synthetic.write_dataset(root, num_clips=5, num_frames=5, height=32, width=48, seed=2,
                          num_identities=3, vertical_fraction=0.4)
  return root


def _teachers(fail_on=None):
  enc = teachers.codec_encoder(spatial_factor=8)
  calls = {"n": 0}

  def encode_video(x):
    calls["n"] += 1
    if fail_on is not None and calls["n"] == fail_on:
      raise RuntimeError("simulated crash inside a clip")
    return enc(x)
  return annotators.for_method("semrepa", annotators.Teachers(encode_video=encode_video))


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
    assert r["video_latents"].shape == (2, 4, 6, 768) and r["video_latents"].dtype == np.float32
    assert r["depth_latents"].shape == (2, 4, 6, 768) and r["image_latents"].shape == (1, 4, 6, 768)
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
  assert r["video_latents"].shape == (2, 16, 24, 48)
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


# sha256 of the clip files the annotate job wrote at the start of the annotators refactor (commit
# bc1e7d2): the annotate defaults and the demo's annotation stage, 3 synthetic clips each.
RECORDS_AT_BC1E7D2 = {
    "annotate": {
        "syn000_00000.msgpack": "022ef264b57535f3974f78b9e7aa6719f9d42a3a8df0acd12c661a27ec02a8df",
        "syn000_00001.msgpack": "eaddf9a2a812694cdfe01e2924ba6ba3d9c346d29c3c583c9b9c00a40c8536af",
        "syn000_00002.msgpack": "8396e8b0e65a0b77144629a78512a0ed36682773b41e8e36160923d7653d9819"},
    "demo": {
        "syn000_00000.msgpack": "e3f02f1bbeb7a7049de17e2ac23d5a7e2dfad41916ec0bedfe7ee7c17b268467",
        "syn000_00001.msgpack": "8b83f9c29a6343f7731398e9f41bc468c1f05a0342a08043cedbc03a9c41fe8d",
        "syn000_00002.msgpack": "f78af521cb88f6655df66ebc7bd2f1f02524a3a744fd9d733a50a225bc856a64"},
}


def _hashes(out):
  import hashlib
  d = os.path.join(out, "clips")
  return {f: hashlib.sha256(open(os.path.join(d, f), "rb").read()).hexdigest()
          for f in sorted(os.listdir(d))}


def test_default_records_are_byte_identical_to_before_the_annotators(tmp_path):
  from configs import annotate as annotate_config
  from configs import demo as demo_config
  from sem_repa_jax.jobs import annotate as annotate_job
  from sem_repa_jax.jobs import demo as demo_job
  c = annotate_config.get_config()
  c.workdir, c.data.root = str(tmp_path / "ann"), str(tmp_path / "ann_syn")
  c.data.synthetic_clips, c.progress_bar = 3, False
  annotate_job.run(c)
  got = {"annotate": _hashes(os.path.join(c.workdir, "annotations"))}
  d = demo_config.get_config()
  d.workdir, d.progress_bar, d.demo.train_clips = str(tmp_path / "demo"), False, 3
  a = demo_job.stage_configs(d)["annotate_train"]
  demo_job._make_data(d, a, "train")
  annotate_job.run(a)
  got["demo"] = _hashes(a.workdir)
  assert got == RECORDS_AT_BC1E7D2


def test_annotators_are_chosen_by_record_field(dataset, tmp_path):
  t = annotators.Teachers(encode_video=teachers.codec_encoder(spatial_factor=8))
  chosen = annotators.for_fields(("face_masks", "video_latents"), t)
  assert [type(a) for a in chosen] == [annotators.FaceBoxes, annotators.VideoLatents]
  assert [type(a) for a in annotators.for_method("semrepa", t)] == [
      annotators.VideoLatents, annotators.DepthLatents, annotators.ImageLatents,
      annotators.FaceEmbeds, annotators.FaceBoxes]
  with_text = annotators.Teachers(t.encode_video, encode_text=lambda s: np.ones((2, 3)) * len(s))
  assert annotate.annotated_fields(annotators.for_method("semrepa", with_text))[-1] == "text_embeds"
  with pytest.raises(ValueError, match="'poses'"):
    annotators.for_fields(("video_latents", "poses"), t)
  with pytest.raises(ValueError, match="need the teacher 'encode_text'"):
    annotators.for_fields(("text_embeds",), t)

  out = str(tmp_path / "ann")
  annotate.annotate_dataset(dataset, out, SPEC, chosen)
  full = str(tmp_path / "full")
  annotate.annotate_dataset(dataset, full, SPEC, annotators.for_method("semrepa", t))
  part, whole = _decoded(out), _decoded(full)
  for k, r in part.items():
    assert list(r) == list(records.CLIP_KEYS) + ["face_boxes", "face_masks", "video_latents"]
    for key in ("face_boxes", "face_masks", "video_latents"):
      np.testing.assert_array_equal(r[key], whole[k][key])
    with pytest.raises(records.RecordError) as e:
      records.check_record(r, f"{out}/clips/{k}.msgpack")
    assert str(e.value).startswith(f"{out}/clips/{k}.msgpack: missing fields 'depth_latents', "
                                   "'image_latents'") and "\n" not in str(e.value)
  # Clips annotated for fewer fields are recomputed, not skipped, when more are asked for.
  s = annotate.annotate_dataset(dataset, out, SPEC, annotators.for_method("semrepa", t))
  assert s["annotated"] == 5 and s["skipped"] == 0
  assert list(next(iter(_decoded(out).values()))) == list(records.required_keys("semrepa"))


def test_records_are_checked_against_the_method(tmp_path):
  rec = {k: 0 for k in records.required_keys("semrepa")}
  assert records.check_record(rec) is rec
  del rec["depth_latents"]
  with pytest.raises(records.RecordError, match=r"^clip\.msgpack: missing field 'depth_latents' "):
    records.check_record(rec, "clip.msgpack")
  assert records.check_record(rec, "x", required=records.CLIP_KEYS + ("video_latents",)) is rec
  with pytest.raises(ValueError, match="'no_such_method': no record fields declared"):
    records.required_keys("no_such_method")
