"""Job align_poses end to end at test size on synthetic keypoint clips: the loss falls, the learned
aligner beats SVD only and least squares on held-out identities under strong misalignment, the
exported folder loads and gives the trained aligner's answer; and the data's errors."""
import json
import os

import jax
import numpy as np
import pytest

from configs import align_poses as align_poses_config
from data_pipelines.poses import pairs
from data_pipelines.poses.keypoints import PoseKeypoints, save_keypoints
from sem_repa_jax.jobs import align_poses
from sem_repa_jax.methods.pose_alignment import similarity
from sem_repa_jax.models import load_pretrained


def _config(workdir, steps=400):
  c = align_poses_config.get_config()
  c.workdir = str(workdir)
  c.data.synthetic_clips, c.data.synthetic_frames, c.data.pairs_per_clip = 96, 12, 8
  c.data.batch_size, c.data.prefetch = 32, 0
  c.model.width, c.model.heads, c.model.encoder_layers, c.model.fusion_layers = 32, 2, 1, 2
  c.train.num_steps = c.optimizer.decay_steps = steps
  c.optimizer.warmup_steps = 20
  c.eval.num_clips, c.eval.pairs_per_clip = 24, 4
  c.checkpoint.every_steps, c.log_every_steps, c.progress_bar = steps, 50, False
  return c


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  c = _config(tmp_path_factory.mktemp("align_poses"))
  state = align_poses.run(c)
  return c, state


def test_loss_falls_and_the_learned_aligner_beats_both_baselines_on_held_out_identities(trained):
  c, _ = trained
  with open(os.path.join(c.workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  # An untrained aligner is SVD only (its correction starts at zero): the loss starts at the
  # SVD-only loss of the same batch and ends below it.
  np.testing.assert_allclose(rows[0]["loss"], rows[0]["svd_only"], rtol=0.05)
  late = rows[-3:]
  assert np.mean([r["loss"] for r in late]) < 0.96 * np.mean([r["svd_only"] for r in late]), late
  with open(os.path.join(c.workdir, "alignment.json")) as f:
    table = json.load(f)
  strong = table["strong"]
  assert strong["learned"]["mean"] < strong["svd_only"]["mean"] < strong["least_squares"]["mean"]
  assert strong["least_squares"]["mean"] < strong["unaligned"]["mean"]
  assert strong["learned"]["n"] == 24 * 4
  assert "| strong |" in open(os.path.join(c.workdir, "alignment.md")).read()


def test_the_exported_aligner_loads_and_answers_as_trained(trained):
  c, state = trained
  module, variables = load_pretrained(os.path.join(c.workdir, align_poses.EXPORT))
  x = pairs.PosePairSource(pairs.synthetic_clips(2, 6, seed=9), 2, 0).arrays()
  args = (x["reference"], x["reference_scores"], x["driving"], x["driving_scores"])
  got = module.apply(variables, *args)["final"]
  want = align_poses.build_model(c).apply({"params": jax.device_get(state.params["params"])},
                                          *args)["final"]
  np.testing.assert_allclose(similarity.apply(got, x["driving"]),
                             similarity.apply(want, x["driving"]), atol=1e-6)


def test_pairs_are_fixed_by_index_and_keypoint_files_need_their_image_size(tmp_path):
  clips = pairs.synthetic_clips(3, 5, seed=4)
  source = pairs.PosePairSource(clips, 4, seed=1)
  assert len(source) == 12
  a, b = source[7], pairs.PosePairSource(clips, 4, seed=1)[7]
  assert all(np.array_equal(a[k], b[k]) for k in pairs.FIELDS)
  assert not np.array_equal(a["reference"], a["driving"])        # two distinct frames
  kp = PoseKeypoints.empty(3)
  save_keypoints(str(tmp_path / "c0" / "keypoints.npz"), kp)
  with pytest.raises(ValueError, match="no 'image_size'"):
    pairs.keypoint_file_clips(str(tmp_path / "*" / "keypoints.npz"))
  with pytest.raises(FileNotFoundError, match="config.data.keypoints"):
    pairs.keypoint_file_clips(str(tmp_path / "none" / "*.npz"))
  with pytest.raises(ValueError, match="fewer than 2 frames"):
    pairs.PosePairSource([(np.zeros((1, 18, 2)), np.ones((1, 18)))], 2, 0)


def test_the_sample_job_draws_poses_aligned_by_the_exported_aligner(trained, tmp_path):
  import ml_collections
  from data_pipelines.poses import align, draw
  from data_pipelines.poses.annotate import synthetic_keypoints
  from data_pipelines.synthetic import clip_keypoints
  from sem_repa_jax.jobs import _sample_stableanimator
  c, _ = trained
  kp = synthetic_keypoints(clip_keypoints(5, 4, 48, 64), 48, 64)
  save_keypoints(str(tmp_path / "ref.npz"), kp.frame(0))
  save_keypoints(str(tmp_path / "drv.npz"), kp)
  cfg = ml_collections.ConfigDict(dict(poses=str(tmp_path / "drv.npz"),
                                       reference_keypoints=str(tmp_path / "ref.npz"),
                                       pose_aligner=os.path.join(c.workdir, align_poses.EXPORT)))
  got = _sample_stableanimator.driving_poses(cfg, 48, 64)
  module, variables = load_pretrained(cfg.pose_aligner)
  want = draw.draw_poses(align.align_learned(kp.frame(0), kp, module, variables, (48, 64)), 48, 64)
  np.testing.assert_array_equal(got, want)
  assert not np.array_equal(got, draw.draw_poses(kp, 48, 64))
  cfg.pose_aligner = c.workdir
  with pytest.raises(ValueError, match="config.pose_aligner"):
    _sample_stableanimator.driving_poses(cfg, 48, 64)


def test_trains_on_keypoint_files_and_resumes_exactly(tmp_path):
  """DWPose-style keypoint files (here the synthetic ground truth written as the pose annotation
  writes it) as the data; 6 steps, then 6 more resumed, equal 12 straight."""
  from data_pipelines.poses.annotate import synthetic_keypoints
  from data_pipelines.synthetic import clip_keypoints
  for i in range(4):
    save_keypoints(str(tmp_path / "poses" / f"c{i}" / "keypoints.npz"),
                   synthetic_keypoints(clip_keypoints(i, 6, 48, 64), 48, 64))
  runs = {}
  for name, steps in (("resumed", (6, 12)), ("straight", (12,))):
    c = _config(tmp_path / name, steps=12)
    c.data.keypoints = str(tmp_path / "poses" / "*" / "keypoints.npz")
    c.data.batch_size, c.eval.num_clips, c.checkpoint.every_steps = 8, 0, 6
    c.optimizer.warmup_steps = 2
    c.checkpoint.async_save = False
    for n in steps:
      c.train.num_steps = n
      state = align_poses.run(c)
    runs[name] = jax.device_get(state.params)
  assert int(state.step) == 12
  jax.tree.map(np.testing.assert_array_equal, runs["resumed"], runs["straight"])
  assert not os.path.exists(os.path.join(c.workdir, "alignment.json"))
