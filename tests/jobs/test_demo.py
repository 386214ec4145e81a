"""The embedded demo end to end on a shrunken config: every artifact, a parseable report naming
the metrics, finite metrics; and a rerun reuses every finished stage instead of retraining."""
import html.parser
import json
import math
import os

import jax
import numpy as np
import pytest

from configs import demo as demo_config
from sem_repa_jax.jobs import _semrepa, demo
from sem_repa_jax.methods.semrepa import factory
from sem_repa_jax.training import checkpoint
from sem_repa_jax.models import load_pretrained

STAGES = ("align", "finetune", "finetune_baseline")


def _config(workdir):
  c = demo_config.get_config()
  c.workdir = str(workdir)
  c.demo.train_clips, c.demo.eval_clips = 3, 2
  c.demo.num_frames, c.demo.height, c.demo.width = 5, 16, 24
  c.demo.sample_steps, c.demo.baseline = 2, True
  c.align.num_steps = c.finetune.num_steps = 3
  c.data.batch_size = 8          # the 8 simulated devices form an 8-way data-parallel mesh
  c.model.pretrained_transformer = ""          # from scratch: the shipped backbone is demo-sized
  c.model.backbone.num_layers = 1
  c.model.backbone.num_attention_heads, c.model.backbone.attention_head_dim = 1, 16
  c.model.identity.channels, c.model.identity.norm_groups = (8, 16), 4
  c.demo.export_backbone = os.path.join(str(workdir), "backbone")
  c.log_every_steps = 1
  c.progress_bar = False
  return c


class _Page(html.parser.HTMLParser):
  def __init__(self):
    super().__init__()
    self.srcs, self.text = [], []

  def handle_starttag(self, tag, attrs):
    if tag == "img":
      self.srcs.append(dict(attrs)["src"])

  def handle_data(self, data):
    self.text.append(data)


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("demo")
  demo.run(_config(workdir))
  return str(workdir)


def _lines(path):
  with open(path) as f:
    return f.read().splitlines()


def test_artifacts_report_and_metrics(ran, capsys):
  for stage in STAGES:
    assert checkpoint.latest_step(os.path.join(ran, stage)) == 3
    rows = [json.loads(line) for line in _lines(os.path.join(ran, stage, "metrics.jsonl"))]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(math.isfinite(v) for r in rows for v in r.values())
  assert os.path.isdir(os.path.join(ran, "align", _semrepa.ALIGNMENT_DIRNAME))
  samples = np.load(os.path.join(ran, "samples", "samples.npz"))
  assert samples["video_finetune"].shape == samples["video_finetune_baseline"].shape == (2, 5, 16, 24, 3)
  assert np.all(np.isfinite(samples["video_finetune"]))
  for cid in samples["clip_ids"]:
    for name in ("finetune", "finetune_baseline"):
      assert os.path.getsize(os.path.join(ran, "samples", f"{cid}_{name}.mp4")) > 0

  page = _Page()
  with open(os.path.join(ran, "report.html")) as f:
    page.feed(f.read())
  text = " ".join(page.text)
  for name in ("psnr", "ssim", "depth_rmse", "id_cosine", "SemanticREPA", "plain fine-tuning",
               "first frame repeated", "Stage 1 losses", "Stage 2 losses", "does not show"):
    assert name in text, name
  assert any(s.endswith(".gif") for s in page.srcs) and any(s.endswith(".png") for s in page.srcs)
  for src in page.srcs:
    assert os.path.getsize(os.path.join(ran, src)) > 0, src

  with open(os.path.join(ran, "eval.json")) as f:
    rows = json.load(f)["mean_over_clips"]
  # id_score needs a face in a clip's first frame and a later one; at 16x24 the heads are a few
  # pixels and may miss the renderer's 4-pixel presence rule.
  from sem_repa_jax.jobs._demo_eval import eval_records
  faces = any(r["face_present"][0] and r["face_present"][1:].any()
              for r in eval_records(_config(ran)))
  assert set(rows["SemanticREPA"]) == {"psnr", "ssim", "depth_rmse", "id_cosine"} | \
      ({"id_score"} if faces else set())
  assert -1 <= rows["SemanticREPA"].get("id_score", 0) <= 1
  assert all(math.isfinite(v) for r in rows.values() for v in r.values())
  timings = json.load(open(os.path.join(ran, "timings.json")))
  assert set(STAGES) | {"annotate_train", "annotate_eval", "sample", "export_backbone"} <= set(timings)
  # The exported backbone is stage 2's EMA transformer, in the converter's format.
  module, exported = load_pretrained(os.path.join(ran, "backbone"))
  _, trained = checkpoint.restore_variables(os.path.join(ran, "finetune"), ema=True)
  assert type(module).__name__ == "CogVideoXTransformer3D"
  for a, b in zip(jax.tree.leaves(exported["params"]), jax.tree.leaves(trained["params"]["transformer"])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_rerun_reuses_finished_stages(ran, capsys):
  before = {s: _lines(os.path.join(ran, s, "metrics.jsonl")) for s in STAGES}
  npz = os.path.join(ran, "samples", "samples.npz")
  mtime = os.stat(npz).st_mtime_ns
  capsys.readouterr()
  demo.run(_config(ran))
  out = capsys.readouterr().out.strip().splitlines()
  assert out[-1].endswith(os.path.join(ran, "report.html"))
  for s in STAGES:
    assert checkpoint.latest_step(os.path.join(ran, s)) == 3
    assert _lines(os.path.join(ran, s, "metrics.jsonl")) == before[s]     # not retrained
  assert os.stat(npz).st_mtime_ns == mtime                               # not resampled


def test_shipped_backbone_is_the_demo_configs():
  """assets/demo_backbone (made by configs/demo_pretrain.py) is the backbone configs/demo.py
  describes at the demo's size, with the weights such a backbone has."""
  import flax.linen as nn
  from sem_repa_jax.models.cogvideox.transformer import example_inputs
  c = demo.stage_configs(demo_config.get_config())["finetune"]
  module, shipped = load_pretrained(c.model.pretrained_transformer)
  described = c.copy_and_resolve_references()
  described.model.pretrained_transformer = ""
  assert module.config == factory.backbone_config(described)
  want = nn.unbox(jax.eval_shape(module.init, jax.random.key(0), **example_inputs(module.config)))
  assert jax.tree.map(lambda x: (x.shape, x.dtype), want) == \
      jax.tree.map(lambda x: (x.shape, x.dtype), shipped)


def test_a_changed_setting_redoes_its_stage_and_what_reads_it(ran, tmp_path, capsys):
  """A copy of the finished run (paths are keyed relative to the workdir), rerun with other
  sampling settings and without the baseline: the trained stages are reused, the samples are
  made again, and the report has no baseline row."""
  import shutil
  copy = str(tmp_path / "copy")
  shutil.copytree(ran, copy)
  before = {s: _lines(os.path.join(copy, s, "metrics.jsonl")) for s in STAGES}
  npz = os.path.join(copy, "samples", "samples.npz")
  old = np.load(npz)["latents_finetune"]
  c = _config(copy)
  c.demo.sample_steps, c.demo.baseline = 3, False
  capsys.readouterr()
  demo.run(c)
  for s in ("align", "finetune"):
    assert _lines(os.path.join(copy, s, "metrics.jsonl")) == before[s]   # reused
  samples = np.load(npz)
  assert "latents_finetune_baseline" not in samples.files
  assert not np.array_equal(samples["latents_finetune"], old)          # 3 steps, not 2
  rows = json.load(open(os.path.join(copy, "eval.json")))["mean_over_clips"]
  assert "plain fine-tuning" not in rows and "SemanticREPA" in rows
  keys = json.load(open(os.path.join(copy, "stages.json")))
  assert keys == demo.stage_keys(c, demo.stage_configs(c))


def test_id_score_judge_tells_the_real_identity_from_another():
  # The demo's id_score with the shipped recognizer at the demo's frame size: the real clip scores
  # its own consistency; the same motion worn by other identities (same render seed, so nearly
  # the same face boxes) scores lower, clip by clip.
  from data_pipelines import synthetic
  from sem_repa_jax.jobs._demo_eval import recognizer_id_score
  from sem_repa_jax.models import load_pretrained
  recognizer = load_pretrained(demo_config.FACE_RECOGNIZER)
  signed = lambda c: c.rgb.astype(np.float32)[None] / 127.5 - 1.0
  for seed, other in ((11, 12), (13, 14), (15, 16)):
    real = synthetic.render_clip(seed, 9, 48, 32, identity_seed=900000 + seed, motion_variation=0.0)
    fake = synthetic.render_clip(seed, 9, 48, 32, identity_seed=900000 + other, motion_variation=0.0)
    recs = [{"face_boxes": real.face_box, "face_present": real.face_present}]
    own = recognizer_id_score(recognizer, recs, signed(real), signed(real))
    swapped = recognizer_id_score(recognizer, recs, signed(fake), signed(real))
    assert own > swapped + 0.2, (seed, own, swapped)
