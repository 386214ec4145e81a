"""Job 'train_face_recognizer': a small ArcFace for the synthetic identities (configs/face_recognizer.py).

Clips of `data.num_identities` synthetic identities are rendered once (their face frames cached
in <workdir>/faces_<hash>.npz); each step cuts augmented face crops out of them
(data_pipelines/face_crops.py) and trains a small IResNet with the ArcFace loss
(methods/face_recognition/arcface_loss.py), sharded and resumable through training/fit.py. The
BatchNorm statistics are set once on training faces and stay frozen, as the IResNet always runs
them. At the end the recognizer alone is exported as <workdir>/export/face_recognizer (kind
'arcface': load_pretrained gives the IResNet, a drop-in ArcFace) and, when eval.num_identities
> 0, measured on held-out identities (methods/face_recognition/verification.py):
<workdir>/face_recognizer.json and face_recognizer.md.
"""
import functools
import hashlib
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from tqdm import tqdm

from sem_repa_jax.methods.face_recognition import arcface_loss, verification
from sem_repa_jax.models.config_fields import from_fields
from sem_repa_jax.models.encoders import arcface, face_embed
from sem_repa_jax.models.pretrained import load_pretrained, save_pretrained
from sem_repa_jax.training.fit import fit

EXPORT = os.path.join("export", "face_recognizer")
FIGURES = "face_recognizer.json"


def recognizer_config(config) -> arcface.IResNetConfig:
  m = config.model.to_dict()
  m["layers"], m["widths"] = tuple(m["layers"]), tuple(m["widths"])
  return from_fields(arcface.IResNetConfig, m, "config.model")


def build_model(config) -> arcface_loss.ArcFaceTrainer:
  backbone = arcface.IResNet(recognizer_config(config), dtype=jnp.dtype(config.dtype),
                             param_dtype=jnp.dtype(config.param_dtype))
  return arcface_loss.ArcFaceTrainer(backbone, config.data.num_identities,
                                     param_dtype=jnp.dtype(config.param_dtype))


def _faces(config, split: str) -> list:
  """The rendered faces of `split` ('data' or 'eval' settings), from the workdir's cache."""
  from data_pipelines import face_crops
  progress = functools.partial(tqdm, desc=f"render {split}") if config.progress_bar else None
  s = config[split]
  n = s.num_identities
  fields = (n, s.identity_seed, s.render_seed, s.clips_per_identity, s.num_frames,
            config.data.fps, [list(v) for v in s.sizes], list(s.motion_variations))
  key = hashlib.sha256(json.dumps(fields).encode()).hexdigest()[:12]
  path = os.path.join(config.workdir, f"faces_{split}_{key}.npz")
  if os.path.isfile(path):
    return face_crops.load_faces(path)
  faces = face_crops.render_faces(range(s.identity_seed, s.identity_seed + n),
                                  s.clips_per_identity, s.num_frames, s.sizes, s.render_seed,
                                  config.data.fps, tuple(s.motion_variations), progress)
  if jax.process_index() == 0:
    face_crops.save_faces(path, faces)
  return faces


def crop_dataset(config, faces):
  """This process's shard of the augmented crops as a grain dataset of batches."""
  from data_pipelines import face_crops, loader
  d = config.data
  source = face_crops.FaceCropSource(faces, d.views, d.seed, config.model.input_size,
                                     d.box_shift, d.box_scale, d.flip)
  shard_index, n = loader.process_shard()
  if d.batch_size % n:
    raise ValueError(f"config.data.batch_size={d.batch_size} (global) is not divisible by the "
                     f"{n} processes")
  ds = loader.clip_dataset(source, seed=d.seed, batch_size=d.batch_size // n, num_epochs=None,
                           shard_index=shard_index, shard_count=n, decode=False)
  return loader.Prefetched(ds, d.prefetch)


def make_loss_fn(model, config):
  scale, margin = float(config.loss.scale), float(config.loss.margin)

  def loss_fn(variables, batch, rng):
    del rng
    loss, accuracy = arcface_loss.arcface_loss(model.apply(variables, batch["face"]),
                                               batch["identity"], scale, margin)
    return loss, {"arcface": loss, "train_accuracy": accuracy}
  return loss_fn


def calibration(config, model, faces):
  """prepare_state for fit: the frozen BN statistics set on the first training faces."""
  from data_pipelines import face_crops
  n = config.loss.calibration_faces
  rng = np.random.default_rng([config.data.seed, 17])
  pool = [(g, i) for g, f in enumerate(faces) for i in range(len(f))]
  pick = rng.choice(len(pool), min(n, len(pool)), replace=False)
  x = np.stack([face_crops.crop(faces[pool[p][0]], pool[p][1], config.model.input_size)
                for p in pick])

  def prepare(state):
    variables = jax.device_get(state.variables())
    calibrated = arcface_loss.calibrate_batchnorm(model, variables, x)
    frozen = jax.tree.map(lambda old, new: jax.device_put(new, old.sharding), state.frozen,
                          {"batch_stats": calibrated["batch_stats"]})
    return state.replace(frozen=frozen)
  return prepare


def export(config, state) -> str:
  path = os.path.join(config.workdir, EXPORT)
  params = state.ema if state.ema is not None else state.params
  variables = jax.device_get({"params": params["params"]["backbone"],
                              "batch_stats": state.frozen["batch_stats"]["backbone"]})
  if jax.process_index() == 0:
    save_pretrained(path, kind="arcface",
                    module_kwargs={"config": arcface.config_to_json(recognizer_config(config)),
                                   "dtype": str(jnp.dtype(config.dtype)),
                                   "param_dtype": str(jnp.dtype(config.param_dtype))},
                    variables=variables,
                    source=f"job train_face_recognizer: {config.workdir}, step {int(state.step)}")
  return path


def held_out_figures(module, variables, faces: list) -> dict:
  """verification_figures of a recognizer on rendered faces (exact boxes, crop 'square')."""
  from data_pipelines import face_crops
  size = module.config.input_size
  emb = np.concatenate([face_embed.embed(module, variables, face_crops.crops(f, size))
                        for f in faces])
  ids = np.concatenate([f.identities for f in faces])
  clips = np.concatenate([f.clips for f in faces])
  return verification.verification_figures(emb, ids, clips)


def evaluate(config, path: str) -> dict:
  """The figures of the exported recognizer on config.eval's held-out identities, written to
  the workdir."""
  module, variables = load_pretrained(path)
  figures = held_out_figures(module, variables, _faces(config, "eval"))
  figures["identity_seeds"] = [config.eval.identity_seed,
                               config.eval.identity_seed + config.eval.num_identities]
  if jax.process_index() == 0:
    with open(os.path.join(config.workdir, FIGURES), "w", encoding="utf-8") as f:
      json.dump(figures, f, indent=2)
    with open(os.path.join(config.workdir, "face_recognizer.md"), "w", encoding="utf-8") as f:
      f.write(verification.markdown(figures) + "\n")
  return figures


def run(config):
  """Renders (or reads) the faces, trains to config.train.num_steps (resuming), exports,
  evaluates; returns the TrainState."""
  faces = _faces(config, "data")
  logging.info("%d training faces of %d identities", sum(len(f) for f in faces),
               config.data.num_identities)
  model = build_model(config)
  example = jnp.zeros((1, config.model.input_size, config.model.input_size, 3), jnp.float32)
  state, _ = fit(config, model, make_loss_fn(model, config), (example,),
                 dataset=crop_dataset(config, faces), num_steps=config.train.num_steps,
                 frozen_prefixes=("batch_stats",), prepare_state=calibration(config, model, faces))
  path = export(config, state)
  logging.info("face recognizer at step %d written to %s", int(state.step), path)
  if config.eval.num_identities > 0:
    figures = evaluate(config, path)
    logging.info("face recognizer on %d held-out identities:\n%s",
                 figures["num_identities"], verification.markdown(figures))
  return state
