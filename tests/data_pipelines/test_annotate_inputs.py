"""Annotation never writes into a user's folder unasked, remembers the clip spec it used, and
names what is wrong with its inputs before it writes anything."""
import os
import subprocess
import sys

import pytest

from data_pipelines import annotate, synthetic
from tests.data_pipelines.test_annotate import SPEC, _decoded, _teachers


def _job_config(tmp_path, root, **data):
  from configs import annotate as annotate_config
  c = annotate_config.get_config()
  c.workdir = str(tmp_path / "run")
  c.data.root = str(root)
  c.data.num_frames, c.data.height, c.data.width = 5, 32, 48
  c.progress_bar = False
  for k, v in data.items():
    c.data[k] = v
  return c


def test_a_root_without_manifest_is_refused_and_left_as_it_was(tmp_path):
  from sem_repa_jax.jobs import annotate as annotate_job
  mine = tmp_path / "my_videos"
  mine.mkdir()
  (mine / "clips.jsonl").write_text("{}\n")             # a manifest of another name
  with pytest.raises(ValueError, match=r"my_videos: no manifest.jsonl .*synthetic_clips"):
    annotate_job.run(_job_config(tmp_path, mine))
  with pytest.raises(ValueError, match="holds files but no manifest.jsonl"):
    annotate_job.run(_job_config(tmp_path, mine, synthetic_clips=2))
  assert sorted(os.listdir(mine)) == ["clips.jsonl"]
  assert not os.path.exists(tmp_path / "run" / "annotations")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("syn_inputs"))
  synthetic.write_dataset(root, num_clips=3, num_frames=5, height=32, width=48, seed=4,
                          num_identities=2, split="train")
  return root


def test_another_clip_spec_is_refused_unless_reannotating(dataset, tmp_path):
  out = str(tmp_path / "ann")
  annotate.annotate_dataset(dataset, out, SPEC, _teachers())
  other = annotate.ClipSpec(num_frames=5, fps=8.0, height=16, width=24)
  with pytest.raises(annotate.AnnotationError,
                     match=r"other settings: height 32 \(now 16\), width 48 \(now 24\); .*"
                           r"annotate.reannotate=True"):
    annotate.annotate_dataset(dataset, out, other, _teachers())
  s = annotate.annotate_dataset(dataset, out, other, _teachers(), reannotate=True)
  assert s["annotated"] == 3 and s["skipped"] == 0
  assert {r["height"] for r in _decoded(out).values()} == {16}
  again = annotate.annotate_dataset(dataset, out, other, _teachers())   # the new spec is kept
  assert again["skipped"] == 3


@pytest.mark.parametrize("kwargs,msg", [
    (dict(shard_index=3, shard_count=2), r"shard_index 3 of shard_count 2: expected 0 <="),
    (dict(split="test"), r"manifest.jsonl: no clips of split 'test'"),
])
def test_shards_and_splits_that_select_nothing_are_errors(dataset, tmp_path, kwargs, msg):
  with pytest.raises(annotate.AnnotationError, match=msg):
    annotate.annotate_dataset(dataset, str(tmp_path / "ann"), SPEC, _teachers(), **kwargs)
  assert not os.path.exists(tmp_path / "ann" / "records")


def test_an_empty_manifest_is_an_error(tmp_path):
  root = tmp_path / "empty"
  root.mkdir()
  (root / "manifest.jsonl").write_text("")
  with pytest.raises(annotate.AnnotationError, match="manifest.jsonl: no clips"):
    annotate.annotate_dataset(str(root), str(tmp_path / "ann"), SPEC, _teachers())


def test_a_killed_runs_temporary_files_are_removed(dataset, tmp_path):
  out = tmp_path / "ann"
  (out / "clips").mkdir(parents=True)
  dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                        capture_output=True, text=True).stdout.strip()
  stale = out / "clips" / f"clip.msgpack.tmp{dead}"
  stale.write_bytes(b"half a record")
  annotate.annotate_dataset(dataset, str(out), SPEC, _teachers())
  assert not stale.exists()
  assert not [n for n in os.listdir(out / "clips") if ".tmp" in n]


def _with_faces(dataset, tmp_path, edit):
  """A copy of `dataset` whose first clip's faces file is edited by `edit(dict)`."""
  import shutil
  import numpy as np
  root = tmp_path / "copy"
  shutil.copytree(dataset, root)
  name = sorted(os.listdir(root / "faces"))[0]
  faces = dict(np.load(root / "faces" / name))
  edit(faces)
  np.savez(root / "faces" / name, **faces)
  return str(root), str(root / "faces" / name)


@pytest.mark.parametrize("edit,msg", [
    (lambda f: f.update(boxes=f["boxes"] * 4), r"face boxes reach x=\d+, y=\d+, beyond the frame"),
    (lambda f: f.update(size=[64, 96]), r"made for \(64, 96\) frames"),
])
def test_a_faces_file_of_another_resolution_is_an_error_naming_it(dataset, tmp_path, edit, msg):
  root, path = _with_faces(dataset, tmp_path, edit)
  with pytest.raises(annotate.AnnotationError, match=rf"{path} \(for .*, 32x48 frames\): {msg}"):
    annotate.annotate_dataset(root, str(tmp_path / "ann"), SPEC, _teachers())


def test_a_faces_file_with_the_videos_size_is_accepted(dataset, tmp_path):
  root, _ = _with_faces(dataset, tmp_path, lambda f: f.update(size=[32, 48]))
  s = annotate.annotate_dataset(root, str(tmp_path / "ann"), SPEC, _teachers())
  assert s["annotated"] == 3


def test_records_of_two_clip_sizes_are_refused_naming_both_files(dataset, tmp_path):
  from data_pipelines import loader, records
  a, b = str(tmp_path / "a"), str(tmp_path / "b")
  annotate.annotate_dataset(dataset, a, SPEC, _teachers())
  annotate.annotate_dataset(dataset, b, annotate.ClipSpec(num_frames=5, fps=8.0, height=16,
                                                          width=24), _teachers())
  src = loader.ClipRecordSource(str(tmp_path / "*" / "records" / "*.array_record"))
  with pytest.raises(records.RecordError, match=r"b/records/all-00000-of-00001.array_record and "
                                                r".*a/records/.* hold clips of other sizes "
                                                r"\(video_latents"):
    src.check_fields(records.required_keys("semrepa"))


def test_a_corrupt_record_file_is_named(tmp_path):
  from data_pipelines import loader, records
  bad = tmp_path / "records" / "all-00000-of-00001.array_record"
  bad.parent.mkdir()
  bad.write_bytes(b"this is not an array_record file" * 10)
  with pytest.raises(records.RecordError, match=rf"{bad}: not a readable ArrayRecord file"):
    loader.ClipRecordSource(str(tmp_path / "records"))


def test_a_depth_file_of_another_size_is_an_error_naming_it(dataset, tmp_path):
  import shutil
  import numpy as np
  root = tmp_path / "copy"
  shutil.copytree(dataset, root)
  name = sorted(os.listdir(root / "depth"))[0]
  path = root / "depth" / name
  d = np.load(path) if name.endswith(".npy") else np.load(path)["depth"]
  half = d[:, ::2, ::2]
  os.remove(path)
  np.save(root / "depth" / (os.path.splitext(name)[0] + ".npy"), half)
  with pytest.raises(annotate.AnnotationError,
                     match=r"depth frames of 16x24, but .* has 32x48 frames"):
    annotate.annotate_dataset(str(root), str(tmp_path / "ann"), SPEC, _teachers())
