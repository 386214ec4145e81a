"""Job 'demo': SemanticREPA end to end on synthetic data, ending in <workdir>/report.html.

Stages (a rerun reuses a stage whose output exists and was made from the same inputs and settings,
recorded as a key per stage in <workdir>/stages.json; a stage whose key changed is redone, and so
are the stages that read it; a killed training stage resumes):
  data/{train,eval}          synthetic clips; eval = other identities (another synthetic seed)
  annotations/{train,eval}   job 'annotate' (lossless codec latents, exact depth and identity)
  align                      job 'align' (stage 1: Structure and ID Alignment Modules)
  finetune                   job 'finetune' (stage 2: backbone with L_t + lambda_S L_S + lambda_ID L_ID)
  finetune_baseline          the same with lambda_S = lambda_ID = 0 (demo.baseline)
  samples                    videos from the held-out first frames, decoded by the codec
  eval.json, report.html     metrics and the page
Fields: configs/demo.py; what it shows and does not: docs/demo.md.
"""
import hashlib
import json
import os
import shutil
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


def _export_backbone(c, dst: str, again: bool = False) -> bool:
  """The stage-2 backbone (EMA when trained with one) as a pretrained folder, for a later stage 2
  (written again, replacing the folder whole, when `again`)."""
  if not again and os.path.isfile(os.path.join(dst, "config.json")):
    return False
  path = _semrepa.export_backbone(c, dst, ema=c.optimizer.ema_decay > 0)
  logging.info("backbone exported to %s", path)
  return True


# Config fields that change how a stage reports, not what it makes; `demo` holds the demo's own
# fields, which reach a stage through the fields the job derived from them.
_NOT_OUTPUT = ("progress_bar", "log_every_steps", "demo")


def _settings(c, workdir: str) -> dict:
  """A stage config's fields that decide its output, with paths inside the demo's workdir written
  relative to it (a moved or copied demo folder keeps its stages)."""
  text = c.to_json_best_effort().replace(json.dumps(str(workdir))[1:-1], "<workdir>")
  d = json.loads(text)
  for k in _NOT_OUTPUT:
    d.pop(k, None)
  return d


def stage_keys(config, cfgs) -> dict:
  """Each stage's key: a hash of what its output depends on, its own settings and the keys of the
  stages it reads. A finished stage is reused only under the same key."""
  d, w = config.demo, config.workdir
  keys = {}

  def key(name, *parts):
    keys[name] = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()
                                ).hexdigest()[:16]

  for split in ("train", "eval"):
    a = cfgs["annotate_" + split]
    n = d.train_clips if split == "train" else d.eval_clips
    key(f"data_{split}", split, n, config.seed, d.num_frames, d.height, d.width, d.fps,
        d.motion_variation)
    key(f"annotate_{split}", keys[f"data_{split}"], _settings(a, w))
  key("align", keys["annotate_train"], _settings(cfgs["align"], w))
  for name in ("finetune", "finetune_baseline"):
    key(name, keys["align"], _settings(cfgs[name], w))
  key("export_backbone", keys["finetune"], d.export_backbone)
  key("sample", keys["annotate_eval"], keys["finetune"],
      keys["finetune_baseline"] if d.baseline else None, d.sample_steps, d.sampler,
      d.guidance_scale, config.seed, config.model.pretrained_transformer,
      config.diffusion.to_dict())
  return keys


def _outputs(config, cfgs, name: str) -> list[str]:
  """The folders a stage writes inside the demo's workdir (removed when its key changed)."""
  w = config.workdir
  if name.startswith("data_"):
    return [cfgs["annotate_" + name[5:]].data.root]
  if name.startswith("annotate_"):
    return [cfgs[name].workdir]
  if name in ("align", "finetune", "finetune_baseline"):
    return [cfgs[name].workdir]
  if name == "sample":
    return [os.path.join(w, "samples")]
  return []                         # export_backbone writes where the user said: replaced whole


def run(config) -> None:
  from sem_repa_jax.jobs import align, finetune
  cfgs = stage_configs(config)
  timings_path = os.path.join(config.workdir, "timings.json")
  timings = _read_json(timings_path)
  keys_path = os.path.join(config.workdir, "stages.json")
  made = _read_json(keys_path)      # the key each finished stage was made with
  keys = stage_keys(config, cfgs)

  def stage(name, fn, *args):
    existing = [p for p in _outputs(config, cfgs, name) if os.path.exists(p)]
    if made.get(name) != keys[name] and (existing or name in made):
      logging.info("stage %s: %s; redoing it", name,
                   "its inputs or settings changed" if name in made else
                   "its output has no record of what it was made from")
      for path in existing:
        shutil.rmtree(path)
      args = args + ((True,) if fn is _export_backbone else ())
    # Recorded before the work: a stage killed midway resumes under the same key.
    made[name] = keys[name]
    _write_json(keys_path, made)
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
