"""The demo's last stages: sampling from held-out first frames and evaluation (the page itself is
jobs/_demo_report.py).

Measures, on clips of identities never seen in training (docs/demo.md explains each):
- psnr, ssim: generated frames 1..F-1 against the real clip (frame 0 is the given image);
- depth_rmse, id_cosine: the stage-1 modules as judges (methods/semrepa/judges.py). The synthetic
  face teacher IS the identity vector, so the IDM stands in for ArcFace as the identity judge.
- id_score: SemanticREPA's ID score with the face recognizer trained on other synthetic
  identities (config.demo.face_recognizer, assets/face_recognizer: the ArcFace stand-in): the
  cosine of each frame's face with the given first frame's, faces cut at the real clip's boxes.
The teacher row applies the judges to the real clip: their own error (for id_score, the real
clip's own identity consistency).
"""
import functools
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from sem_repa_jax.eval import metrics
from sem_repa_jax.eval.colorize import nearness
from sem_repa_jax.eval.video_io import to_uint8
from sem_repa_jax.jobs import _demo_report, _semrepa
from sem_repa_jax.jobs._demo_report import MODELS, STATIC, TEACHER
from sem_repa_jax.methods.semrepa import factory
from sem_repa_jax.methods.semrepa.judges import AlignmentJudges
from sem_repa_jax.training import checkpoint


def _codec(config):
  from sem_repa_jax.models.latent_codec import LatentCodec
  return LatentCodec(spatial_factor=config.demo.codec_spatial_factor)


def eval_records(config) -> list:
  from data_pipelines import loader
  src = loader.ClipRecordSource(os.path.join(config.workdir, "annotations", "eval", "records"))
  dec = loader.DecodeRecord()
  return sorted((dec.map(src[i]) for i in range(len(src))), key=lambda r: r["clip_id"])


@functools.lru_cache(maxsize=None)
def _decoder(codec):
  return jax.jit(lambda z: codec.apply({}, z / codec.scaling_factor, method="decode"))


def _decode(codec, latents):
  """Scaled latents -> video in [-1, 1] (one compiled function per codec and shape)."""
  return np.asarray(_decoder(codec)(jnp.asarray(latents)))


def _transformer(cfg, variables):
  from sem_repa_jax.models.cogvideox.transformer import CogVideoXTransformer3D
  module = CogVideoXTransformer3D(factory.backbone_config(cfg), dtype=jnp.dtype(cfg.dtype),
                                  param_dtype=jnp.dtype(cfg.param_dtype), attention=cfg.attention,
                                  remat_policy=cfg.remat_policy)
  return module, {col: tree["transformer"] for col, tree in variables.items()
                  if "transformer" in tree}


def _samples_path(config):
  return os.path.join(config.workdir, "samples", "samples.npz")


def sample(config, cfgs) -> bool:
  """Samples every held-out clip from its real first frame with the pretrained backbone (when stage
  2 starts from one) and each fine-tuned one, with the same noise, so they differ only by
  training; writes samples/samples.npz and mp4s."""
  from data_pipelines.video import write_video
  from sem_repa_jax.pipelines import cogvideox_i2v as i2v
  path = _samples_path(config)
  if os.path.isfile(path):
    return False
  d = config.demo
  codec = _codec(config)
  recs = eval_records(config)
  truth = _decode(codec, np.stack([r["video_latents"] for r in recs]))
  first = [i2v.to_uint8(v[0]) for v in truth]
  facts = i2v.ModelFacts(latent_channels=cfgs["finetune"].model.latent_channels,
                         vae_scaling_factor=codec.scaling_factor,
                         spatial_compression=d.codec_spatial_factor,
                         temporal_compression=config.model.temporal_compression,
                         prediction_type=config.diffusion.prediction_type)
  settings = i2v.SamplingSettings(
      height=d.height, width=d.width, num_frames=d.num_frames, num_inference_steps=d.sample_steps,
      guidance_scale=d.guidance_scale, sampler=d.sampler,
      snr_shift_scale=config.diffusion.snr_shift_scale)
  # No text encoder in the demo: zero text tokens, exactly what training saw (text_embeds=None).
  text_dim = factory.backbone_config(cfgs["finetune"]).text_embed_dim
  text = jnp.zeros((len(recs), 0, text_dim), jnp.float32)
  out, pipe = {"clip_ids": np.array([r["clip_id"] for r in recs])}, None
  for name, label in MODELS:
    if name == "pretrained":      # what stage 2 started from
      if not config.model.pretrained_transformer:
        continue
      from sem_repa_jax.models import load_pretrained
      module, tvars = load_pretrained(config.model.pretrained_transformer)
    elif name in cfgs and (name == "finetune" or d.baseline):
      _, variables = checkpoint.restore_variables(cfgs[name].workdir,
                                                ema=cfgs[name].optimizer.ema_decay > 0)
      module, tvars = _transformer(cfgs[name], variables)
    else:
      continue
    if pipe is None:
      pipe = i2v.CogVideoXImageToVideo(module, tvars, codec, {}, facts=facts,
                                       progress=config.progress_bar)
    pipe.transformer_variables = tvars      # same shapes: the compiled loop is reused
    pipe.progress.desc = f"sample {name}"
    logging.info("sampling %d clips with the %s backbone", len(recs), label)
    res = pipe(first, text, text, key=jax.random.key(config.seed), settings=settings)
    out[f"latents_{name}"] = np.asarray(res["latents"])
    out[f"video_{name}"] = np.asarray(res["video"])
    for cid, v in zip(out["clip_ids"], out[f"video_{name}"]):
      write_video(os.path.join(config.workdir, "samples", f"{cid}_{name}.mp4"), v, d.fps)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = path + ".tmp.npz"
  np.savez(tmp, **out)
  os.replace(tmp, path)
  return True


def recognizer_id_score(recognizer, recs, video, truth) -> float:
  """Mean over clips of the ID score of frames 1.. (eval/identity.id_score_at_boxes): each face
  against the given first frame's face (truth frame 0), all cut at the real clip's face boxes, so
  a figure that does not follow the real clip's motion is scored where its face should be."""
  from sem_repa_jax.eval.identity import id_score_at_boxes
  scores = []
  for rec, v, t in zip(recs, to_uint8(video), to_uint8(truth)):
    boxes, present = np.asarray(rec["face_boxes"]), np.asarray(rec["face_present"], bool)
    if not present[0]:
      continue
    s = id_score_at_boxes(*recognizer, v[1:], boxes[1:], present[1:], t[0], boxes[0])
    if s.count:
      scores.append(s.score)
  return float(np.mean(scores)) if scores else float("nan")


def score(config, recs, latents, video, truth, judges, codec, recognizer=None
          ) -> tuple[dict, np.ndarray]:
  """Mean metrics of one set of videos (None: the real clip) and SAM's depth visualization of them
  (uint8): PSNR and SSIM of frames 1.. against the real clip (frame 0 is the given image), the
  judges' scores, and with a recognizer (module, variables) the ID score."""
  out = {}
  if video is not None:
    x, y = jnp.asarray(video[:, 1:]), jnp.asarray(truth[:, 1:])
    out["psnr"] = float(jnp.mean(metrics.psnr(x, y, data_range=2.0)))
    out["ssim"] = float(jnp.mean(metrics.ssim(x, y, data_range=2.0)))
  teacher = nearness(to_uint8(_decode(codec, np.stack([r["depth_latents"] for r in recs]))))
  judged, depth_u8 = judges.scores(
      latents, functools.partial(_decode, codec), teacher,
      np.stack([r["face_embeds"] for r in recs]), np.stack([r["face_present"] for r in recs]),
      config.model.temporal_compression)
  out.update(judged)
  if recognizer is not None:
    s = recognizer_id_score(recognizer, recs, truth if video is None else video, truth)
    if math.isfinite(s):
      out["id_score"] = s
    else:
      logging.warning("demo evaluation: no held-out clip shows a face in its first frame and a "
                      "later one; id_score left out")
  return out, depth_u8


def evaluate_and_report(config, cfgs, timings: dict) -> str:
  """Scores the samples and the references, writes eval.json and report.html (its path)."""
  codec = _codec(config)
  recs = eval_records(config)
  samples = dict(np.load(_samples_path(config)))
  truth_latents = np.stack([r["video_latents"] for r in recs])
  truth = _decode(codec, truth_latents)
  static = np.repeat(truth[:, :1], truth.shape[1], axis=1)
  static_latents = np.asarray(codec.apply({}, jnp.asarray(static), method="encode")[0]) \
      * codec.scaling_factor
  judges = AlignmentJudges(os.path.join(config.workdir, "align", _semrepa.ALIGNMENT_DIRNAME))
  recognizer = None
  if config.demo.get("face_recognizer"):
    from sem_repa_jax.models import load_pretrained
    recognizer = load_pretrained(config.demo.face_recognizer)
  rows, depth_cols = {}, {}
  rows[TEACHER], depth_cols["SAM(real clip)"] = score(config, recs, truth_latents, None, truth,
                                                      judges, codec, recognizer)
  videos = {}
  for name, label in MODELS:
    if f"latents_{name}" not in samples:
      continue
    videos[label] = samples[f"video_{name}"]
    rows[label], depth_cols[f"SAM({label} sample)"] = score(
        config, recs, samples[f"latents_{name}"], videos[label], truth, judges, codec, recognizer)
  rows[STATIC], _ = score(config, recs, static_latents, static, truth, judges, codec, recognizer)
  for r in rows.values():
    for k, v in r.items():
      if not math.isfinite(v):
        raise ValueError(f"demo evaluation: metric {k} = {v} is not finite")
  teacher_depth = to_uint8(_decode(codec, np.stack([r["depth_latents"] for r in recs])))
  ids = [str(c) for c in samples["clip_ids"]]
  with open(os.path.join(config.workdir, "eval.json.tmp"), "w") as f:
    json.dump({"mean_over_clips": rows, "clips": ids}, f, indent=2)
  os.replace(os.path.join(config.workdir, "eval.json.tmp"), os.path.join(config.workdir, "eval.json"))

  return _demo_report.write(config, cfgs, rows=rows, ids=ids, truth=truth, videos=videos,
                            teacher_depth=teacher_depth, depth_cols=depth_cols, timings=timings)
