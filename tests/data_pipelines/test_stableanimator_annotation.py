"""StableAnimator's records: face-mask loss weights, the official folder layout (written by the
synthetic generator, read back, errors), and the annotate job end to end with tiny random
teachers, its records loading as the training job's batches."""
import os
import shutil

import numpy as np
import pytest

from data_pipelines import (annotate, annotators, faces, layout, official_layout, records,
                            synthetic, video)
from data_pipelines.poses import annotate as poses_annotate
from data_pipelines.poses import draw
from sem_repa_jax.models.encoders.face_detect import GivenFaces
from tests.data_pipelines import tiny_teachers
from tests.data_pipelines.test_annotate import _decoded, _hashes

SPEC = annotate.ClipSpec(num_frames=5, fps=8.0, height=32, width=48)
SYN = dict(num_clips=3, num_frames=5, height=32, width=48, seed=5, vertical_fraction=0.4)


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
  """The same synthetic clips in the official layout and in the manifest layout."""
  base = tmp_path_factory.mktemp("sa_layouts")
  official, manifest = str(base / "official"), str(base / "manifest")
  ids = synthetic.write_official_dataset(official, **SYN)
  entries = synthetic.write_dataset(manifest, **SYN)
  return official, manifest, ids, entries


@pytest.fixture(scope="module")
def models(tmp_path_factory):
  base = tmp_path_factory.mktemp("sa_models")
  return dict(vae_dir=tiny_teachers.svd_vae(str(base / "vae")),
              clip_dir=tiny_teachers.clip_vision(str(base / "clip")),
              arcface_dir=tiny_teachers.arcface(str(base / "arcface")))


def test_face_weight_masks_are_filled_boxes_and_all_ones_without_a_face(layouts):
  _, manifest, _, entries = layouts
  clip = annotate.read_clip(entries[0], manifest, SPEC)
  boxes = [[9, 1, 23, 15], None, [0, 16, 48, 32], [40, 24, 48, 32], None]
  out = annotators.FaceWeightMasks(faces.FaceSource(GivenFaces(boxes)))(clip)
  m = out["face_weight_masks"]
  assert m.shape == (5, 4, 6) and m.dtype == np.uint8
  # Nearest: latent cell (i, j) is pixel (8i, 8j); box 0 holds pixel (8, 16) only.
  want = np.zeros((4, 6), np.uint8)
  want[1, 2] = 1
  np.testing.assert_array_equal(m[0], want)
  assert np.all(m[1] == 1) and np.all(m[4] == 1)          # no face: the whole frame weighs
  np.testing.assert_array_equal(m[2], np.repeat([[0], [0], [1], [1]], 6, 1))
  assert m[3].sum() == 1 and m[3, 3, 5] == 1


def test_official_layout_round_trips(layouts, tmp_path):
  official, manifest, ids, entries = layouts
  clips = official_layout.read_layout(official)
  assert [c.clip_id for c in clips] == sorted(ids, key=lambda i: (i[:3] != "rec", i))
  assert {c.num_frames for c in clips} == {5} and {i[:3] for i in ids} == {"rec", "vec"}
  index = official_layout.index_dataset(official, str(tmp_path / "index"))
  assert [e.clip_id for e in index] == [c.clip_id for c in clips]
  by_id = {e.clip_id: e for e in entries}
  plans = {p.clip_id: p for p in synthetic.clip_plans(
      SYN["num_clips"], SYN["seed"], vertical_fraction=SYN["vertical_fraction"],
      height=SYN["height"], width=SYN["width"])}
  for c, e in zip(clips, index):
    src = by_id[c.clip_id[4:]]
    frames = video.read_frame_folder(e.path)
    np.testing.assert_array_equal(frames, plans[src.clip_id].render(5, 8.0, 1.0).rgb)
    assert c.clip_id[:3] == ("vec" if frames.shape[1] > frames.shape[2] else "rec")
    # The official masks give back the face boxes as pixel rectangles.
    mine = np.load(layout.faces_path(str(tmp_path / "index"), c.clip_id))
    theirs = np.load(layout.faces_path(manifest, src.clip_id))
    h, w = frames.shape[1:3]
    np.testing.assert_array_equal(
        faces.box_masks(mine["boxes"], mine["present"], h, w),
        faces.box_masks(theirs["boxes"], theirs["present"], h, w))
    # The skeletons are those of the manifest layout's keypoints file.
    kp = poses_annotate.synthetic_clip_keypoints(layout.faces_path(manifest, src.clip_id))
    np.testing.assert_array_equal(video.read_frame_folder(c.path("poses")),
                                  draw.draw_poses(kp, h, w, ref_short=None))


def _png(path, value=0):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  video.write_image(path, np.full((8, 8, 3), value, np.uint8))


@pytest.mark.parametrize("damage, message", [
    ("drop_pose", r"rec/a: frame counts differ \(images 2, faces 2, poses 1\); expected one face "
                  "mask and one skeleton image per frame"),
    ("drop_dense", r"rec/a: frame counts differ \(images 2, faces 2, poses 2, dense 1\); expected "
                   "one face mask and one skeleton image per frame and one dense map"),
    ("gap", r"rec/a/images: frame_1.png is missing; expected frame_0.png .. frame_1.png"),
    ("misnamed", r"rec/a/faces: 'mask_0.png' is not named frame_<i>.png"),
    ("no_faces", r"rec/a/faces: missing; expected a folder of frame_<i>.png"),
    ("empty", r"root: no rec/ or vec/ folder; expected ROOT/\{rec,vec\}/<id>/")])
def test_a_bad_official_layout_is_a_one_line_error(tmp_path, damage, message):
  root = tmp_path / "root"
  root.mkdir()
  if damage != "empty":
    for kind in official_layout.FOLDERS:
      for i in range(2):
        _png(str(root / "rec" / "a" / kind / f"frame_{i}.png"))
  a = root / "rec" / "a"
  if damage == "drop_pose":
    os.remove(a / "poses" / "frame_1.png")
  elif damage == "drop_dense":   # VividPose's optional dense/ counts where it is there
    _png(str(a / "dense" / "frame_0.png"))
  elif damage == "gap":
    os.rename(a / "images" / "frame_1.png", a / "images" / "frame_2.png")
  elif damage == "misnamed":
    os.rename(a / "faces" / "frame_0.png", a / "faces" / "mask_0.png")
  elif damage == "no_faces":
    shutil.rmtree(a / "faces")
  with pytest.raises(official_layout.LayoutError, match=message) as e:
    official_layout.read_layout(str(root))
  assert "\n" not in str(e.value) and str(root) in str(e.value)


def _job_overrides(tmp_path, models) -> dict:
  """configs/annotate_stableanimator.py overrides for 3 synthetic clips and the tiny models."""
  return {"workdir": str(tmp_path / "run"), "progress_bar": False,
          "seed": 2,     # its clips: rec with a face in the reference, rec without one, vec
          "data.root": str(tmp_path / "syn"), "data.synthetic_clips": 3, "data.num_frames": 5,
          "data.height": SPEC.height, "data.width": SPEC.width,
          "data.synthetic_height": SPEC.height, "data.synthetic_width": SPEC.width,
          **{f"annotate.{k}": v for k, v in models.items()}}


def _job_config(tmp_path, models):
  from configs import annotate_stableanimator
  c = annotate_stableanimator.get_config()
  for k, v in _job_overrides(tmp_path, models).items():
    *path, leaf = k.split(".")
    node = c
    for p in path:
      node = node[p]
    node[leaf] = v
  return c


def test_annotate_command_writes_stableanimator_records_that_train_batches_load(tmp_path,
                                                                              models):
  from sem_repa_jax.jobs import _records
  from sem_repa_jax.jobs import annotate as annotate_job
  from sem_repa_jax.methods.stableanimator.objective import BATCH_FIELDS
  from tests.test_main import _main
  c = _job_config(tmp_path, models)
  r = _main(["--config", "configs/annotate_stableanimator.py"]
            + [f"--config.{k}={v}" for k, v in _job_overrides(tmp_path, models).items()], tmp_path)
  assert r.returncode == 0, r.stderr[-2000:]
  out = os.path.join(c.workdir, "annotations")
  recs = _decoded(out)
  assert len(recs) == 3 and {k[:3] for k in recs} <= {"rec", "vec"}
  faced = []
  for cid, r in recs.items():
    records.check_record(r, cid, records.required_keys("stableanimator"))
    assert r["video_latents"].shape == (5, 4, 6, 4) and r["video_latents"].dtype == np.float32
    assert r["reference_latents"].shape == (4, 6, 4)
    assert r["clip_embeds"].shape == (tiny_teachers.CLIP_PROJECTION,)
    assert r["id_embeds"].shape == (tiny_teachers.ARCFACE_FEATURES,)
    assert r["pose_images"].shape == (5, 32, 48, 3) and r["pose_images"].dtype == np.uint8
    assert r["pose_images"].max() > 0
    m = r["face_weight_masks"]
    assert m.shape == (5, 4, 6) and m.dtype == np.uint8 and set(np.unique(m)) <= {0, 1}
    if cid.startswith("rec"):   # at the clip's size: the official masks, nearest-downsampled
      folder = os.path.join(c.data.root, "rec", cid[4:], "faces")
      official = np.stack([video.read_image(f, gray=True) for f in video.frame_files(folder)])
      np.testing.assert_array_equal(m, (official[:, ::8, ::8] > 127).astype(np.uint8))
      norm = np.linalg.norm(r["id_embeds"])
      if np.all(official[0] > 127):                      # no face in the reference
        assert norm == 0
      else:
        faced.append(cid)
        assert abs(norm - 1) > 1e-3                      # raw, not L2-normalized
  assert faced
  # The training job's loader: this process's shard, batches of every BATCH_FIELD.
  c.data.records, c.data.batch_size, c.data.seed, c.data.prefetch = \
      os.path.join(out, "records"), 2, 0, 1
  batch = next(iter(_records.record_dataset(c, BATCH_FIELDS)))
  assert set(batch) >= set(BATCH_FIELDS)
  assert batch["video_latents"].shape == (2, 5, 4, 6, 4)
  assert batch["pose_images"].shape == (2, 5, 32, 48, 3)
  assert batch["face_weight_masks"].shape == (2, 5, 4, 6)
  # A rerun skips every finished clip: no clip file is written again.
  before = {f: os.stat(os.path.join(out, "clips", f)).st_mtime_ns for f in _hashes(out)}
  annotate_job.run(c)
  assert {f: os.stat(os.path.join(out, "clips", f)).st_mtime_ns for f in before} == before


def test_manifest_layout_draws_poses_from_keypoints_and_keeps_the_identity_raw(layouts, tmp_path):
  _, manifest, _, entries = layouts
  t = annotators.Teachers(encode_video=lambda x: np.zeros((len(x), 4, 6, 4), np.float32),
                          encode_image=lambda x: np.ones(3, np.float32))
  chosen = annotators.for_method("stableanimator", t)
  assert [type(a).__name__ for a in chosen] == [
      "VideoLatents", "ReferenceLatents", "ClipEmbeds", "IdEmbeds", "PoseImages",
      "FaceWeightMasks"]
  out = str(tmp_path / "ann")
  annotate.annotate_dataset(manifest, out, SPEC, chosen)
  recs = _decoded(out)
  for e in entries:
    r = recs[e.clip_id]
    f = np.load(layout.faces_path(manifest, e.clip_id))
    if f["present"][0]:
      np.testing.assert_array_equal(r["id_embeds"], f["identity"])
    else:
      assert np.all(r["id_embeds"] == 0)
    h, w = f["masks"].shape[1:3]
    kp = poses_annotate.synthetic_clip_keypoints(layout.faces_path(manifest, e.clip_id))
    want = video.resize_frames(draw.draw_poses(kp, h, w), SPEC.height, SPEC.width)
    np.testing.assert_array_equal(r["pose_images"], want)


def test_masks_off_the_latent_grid_are_refused_before_annotating(tmp_path, models):
  from sem_repa_jax.jobs import annotate as annotate_job
  c = _job_config(tmp_path, models)
  c.annotate.mask_stride = 4
  with pytest.raises(ValueError, match=r"mask_stride=4: face_weight_masks would be 8x12, but the "
                                       r"latents of 32x48 frames are 4x6"):
    annotate_job.run(c)
  assert not os.path.exists(os.path.join(c.workdir, "annotations"))
