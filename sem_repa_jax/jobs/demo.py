"""Job 'demo': SemanticREPA end to end on synthetic data, ending in <workdir>/report.html.

Stages (each skipped when its output exists, so a rerun resumes or only re-renders the report):
  data/{train,eval}          synthetic clips; eval = other identities (another synthetic seed)
  annotations/{train,eval}   job 'annotate' (lossless codec latents, exact depth and identity)
  align                      job 'align' (stage 1: Structure and ID Alignment Modules)
  finetune                   job 'finetune' (stage 2: backbone with L_t + lambda_S L_S + lambda_ID L_ID)
  finetune_baseline          the same with lambda_S = lambda_ID = 0 (demo.baseline)
  samples                    videos from the held-out first frames, decoded by the codec
  eval.json, report.html     metrics and the page
Fields: configs/demo.py; what it shows and does not: docs/demo.md.
"""
import json
import os
import time

from absl import logging

from sem_repa_jax.jobs import _semrepa
from sem_repa_jax.training import checkpoint


def _child(config, workdir: str, job: str):
  c = config.copy_and_resolve_references()
  c.unlock()
  c.job, c.workdir = job, workdir
  return c


def stage_configs(config) -> dict:
  """The configs of every stage, derived from the demo config (see configs/demo.py)."""
  d, w = config.demo, config.workdir
  p = d.codec_spatial_factor
  if d.height % p or d.width % p or (d.num_frames - 1) % config.model.temporal_compression:
    raise ValueError(f"config.demo: {d.num_frames} frames of {d.height}x{d.width} do not fit the "
                     f"codec (height, width multiples of {p}; frames 1 + "
                     f"{config.model.temporal_compression}k)")
  out = {}
  for split in ("train", "eval"):
    a = config.demo.annotate.copy_and_resolve_references()
    a.unlock()
    a.workdir = os.path.join(w, "annotations", split)
    a.seed, a.progress_bar = config.seed, config.progress_bar
    a.data.root = os.path.join(w, "data", split)
    a.data.synthetic_clips = 0          # rendered by this job (all at the demo size, own split seeds)
    a.data.num_frames, a.data.fps = d.num_frames, d.fps
    a.data.height = a.data.synthetic_height = d.height
    a.data.width = a.data.synthetic_width = d.width
    a.annotate.codec_spatial_factor = p
    a.annotate.output_dir = a.workdir
    out["annotate_" + split] = a
  records = os.path.join(w, "annotations", "train", "records")
  latent_channels = config.model.temporal_compression * p * p * 3
  for name, job in (("align", "align"), ("finetune", "finetune"),
                    ("finetune_baseline", "finetune")):
    c = _child(config, os.path.join(w, name), job)
    c.data.records = records
    c.model.latent_channels = latent_channels
    c.model.backbone.in_channels, c.model.backbone.out_channels = 2 * latent_channels, latent_channels
    c.model.backbone.sample_height, c.model.backbone.sample_width = d.height // p, d.width // p
    c.model.backbone.sample_frames = d.num_frames
    steps = c.align.num_steps if job == "align" else c.finetune.num_steps
    c.optimizer.decay_steps = steps          # the cosine schedule spans each stage
    c.optimizer.warmup_steps = min(c.optimizer.warmup_steps, steps // 2)
    if job == "finetune" and d.finetune_learning_rate:
      c.optimizer.learning_rate = d.finetune_learning_rate
    c.finetune.alignment_dir = os.path.join(w, "align", _semrepa.ALIGNMENT_DIRNAME)
    if name == "finetune_baseline":
      c.finetune.lambda_structure = c.finetune.lambda_id = 0.0
    out[name] = c
  return out


# ------------------------------------------------------------------------------------------ stages

def _make_data(config, a, split: str):
  from tqdm import tqdm
  from data_pipelines import synthetic
  if os.path.isfile(os.path.join(a.data.root, "manifest.jsonl")):
    return False
  d = config.demo
  n, seed = (d.train_clips, config.seed) if split == "train" else (d.eval_clips, config.seed + 1)
  logging.info("rendering %d synthetic %s clips into %s", n, split, a.data.root)
  synthetic.write_dataset(a.data.root, n, d.num_frames, d.height, d.width, fps=d.fps, seed=seed,
                          vertical_fraction=0.0, split=split, motion_variation=d.motion_variation,
                          progress=(lambda it: tqdm(it, desc=f"render {split}"))
                          if config.progress_bar else None)
  return True


def _annotate(a):
  from sem_repa_jax.jobs import annotate
  rec = os.path.join(a.workdir, "records")
  if os.path.isdir(rec) and any(f.endswith(".array_record") for f in os.listdir(rec)):
    return False
  annotate.run(a)
  return True


def _train(c, run):
  num_steps = c.align.num_steps if c.job == "align" else c.finetune.num_steps
  done = (checkpoint.latest_step(c.workdir) or 0) >= num_steps
  if c.job == "align":
    done = done and os.path.isdir(c.finetune.alignment_dir)
  if done:
    return False
  logging.info("%s: training %d steps in %s", c.job, num_steps, c.workdir)
  run(c)
  return True


def _export_backbone(c, dst: str) -> bool:
  """The stage-2 backbone (EMA when trained with one) as a pretrained folder, for a later stage 2."""
  if os.path.isfile(os.path.join(dst, "config.json")):
    return False
  path = _semrepa.export_backbone(c, dst, ema=c.optimizer.ema_decay > 0)
  logging.info("backbone exported to %s", path)
  return True


def run(config) -> None:
  from sem_repa_jax.jobs import align, finetune
  cfgs = stage_configs(config)
  timings_path = os.path.join(config.workdir, "timings.json")
  timings = _read_json(timings_path)

  def stage(name, fn, *args):
    t0, c0 = time.perf_counter(), time.process_time()
    ran = fn(*args)
    if ran:
      timings[name] = dict(wall_s=round(time.perf_counter() - t0, 1),
                           cpu_s=round(time.process_time() - c0, 1))
      _write_json(timings_path, timings)
      logging.info("stage %s: %.1f s wall, %.1f s CPU", name, timings[name]["wall_s"],
                   timings[name]["cpu_s"])
    else:
      logging.info("stage %s: reusing %s", name, "its finished output")

  for split in ("train", "eval"):
    stage(f"data_{split}", _make_data, config, cfgs["annotate_" + split], split)
    stage(f"annotate_{split}", _annotate, cfgs["annotate_" + split])
  stage("align", _train, cfgs["align"], align.run)
  stage("finetune", _train, cfgs["finetune"], finetune.run)
  if config.demo.export_backbone:
    stage("export_backbone", _export_backbone, cfgs["finetune"], config.demo.export_backbone)
  if config.demo.baseline:
    stage("finetune_baseline", _train, cfgs["finetune_baseline"], finetune.run)
  from sem_repa_jax.jobs import _demo_eval
  stage("sample", _demo_eval.sample, config, cfgs)
  t0, c0 = time.perf_counter(), time.process_time()
  path = _demo_eval.evaluate_and_report(config, cfgs, timings)
  logging.info("evaluation and report: %.1f s wall, %.1f s CPU", time.perf_counter() - t0,
               time.process_time() - c0)
  logging.info("report: %s", path)
  print(f"SemanticREPA demo report: {os.path.abspath(path)}", flush=True)


def _read_json(path: str) -> dict:
  if not os.path.isfile(path):
    return {}
  with open(path) as f:
    return json.load(f)


def _write_json(path: str, obj) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2, sort_keys=True)
  os.replace(tmp, path)
