"""Job 'align_poses': StableAnimator++'s learnable SVD-guided pose alignment (configs/align_poses.py).

Pairs of frames of one clip (data_pipelines/poses/pairs.py: keypoint files, or synthetic clips)
train the PoseAligner (methods/pose_alignment/aligner.py): each step misaligns the driving poses by
random similarities (config.misalignment) and minimizes the mean distance of the aligned points to
the unperturbed ones (objective.py). Sharded and resumable through training/fit.py. At the end the
aligner is exported as <workdir>/export/pose_aligner (kind 'pose-aligner') and, when
config.eval.num_clips > 0, measured with least squares and SVD only on held-out synthetic
identities (evaluation.py): <workdir>/alignment.json and alignment.md.
"""
import dataclasses
import json
import os

import jax
import jax.numpy as jnp
from absl import logging

from sem_repa_jax.methods.pose_alignment import evaluation, objective, similarity
from sem_repa_jax.methods.pose_alignment.aligner import PoseAligner, PoseAlignerConfig
from sem_repa_jax.models.config_fields import from_fields
from sem_repa_jax.models.pretrained import save_pretrained
from sem_repa_jax.training.fit import fit

EXPORT = os.path.join("export", "pose_aligner")


def build_model(config) -> PoseAligner:
  cfg = from_fields(PoseAlignerConfig, config.model.to_dict(), "config.model")
  return PoseAligner(cfg, dtype=jnp.dtype(config.dtype), param_dtype=jnp.dtype(config.param_dtype))


def misalignment(config) -> objective.Misalignment:
  m = config.misalignment.to_dict()
  m["scale_range"] = tuple(m["scale_range"])
  if not 0 < m["scale_range"][0] <= m["scale_range"][1] or not 0 <= m["drop_rate"] < 1:
    raise ValueError(f"config.misalignment: scale_range {m['scale_range']} must be 0 < lo <= hi and "
                     f"drop_rate {m['drop_rate']} in [0, 1)")
  return from_fields(objective.Misalignment, m, "config.misalignment")


def make_loss_fn(model, m: objective.Misalignment):
  def loss_fn(variables, batch, rng):
    truth, truth_s = batch["driving"], batch["driving_scores"]
    drv, drv_s, _ = objective.misalign(rng, truth, truth_s, m)
    out = model.apply(variables, batch["reference"], batch["reference_scores"], drv, drv_s)
    loss = objective.alignment_loss(similarity.apply(out["final"], drv), truth, truth_s)
    svd = objective.alignment_loss(similarity.apply(out["svd"], drv), truth, truth_s)
    return loss, {"loss": loss, "svd_only": svd}
  return loss_fn


def clips(config, progress=None):
  from data_pipelines.poses import pairs
  d = config.data
  if d.keypoints:
    return pairs.keypoint_file_clips(d.keypoints)
  return pairs.synthetic_clips(d.synthetic_clips, d.synthetic_frames, d.synthetic_seed, d.height,
                               d.width, progress=progress)


def pair_dataset(config):
  """This process's shard of the training pairs as a grain dataset of batches."""
  from data_pipelines import loader
  from data_pipelines.poses import pairs
  d = config.data
  source = pairs.PosePairSource(clips(config), d.pairs_per_clip, d.seed)
  shard_index, n = loader.process_shard()
  if d.batch_size % n:
    raise ValueError(f"config.data.batch_size={d.batch_size} (global) is not divisible by the "
                     f"{n} processes")
  ds = loader.clip_dataset(source, seed=d.seed, batch_size=d.batch_size // n, num_epochs=None,
                           shard_index=shard_index, shard_count=n, decode=False)
  return loader.Prefetched(ds, d.prefetch)


def export(config, model, state) -> str:
  path = os.path.join(config.workdir, EXPORT)
  params = state.ema if state.ema is not None else state.params
  if jax.process_index() == 0:
    save_pretrained(path, kind="pose-aligner",
                    module_kwargs={"config": dataclasses.asdict(model.config),
                                   "dtype": str(jnp.dtype(config.dtype)),
                                   "param_dtype": str(jnp.dtype(config.param_dtype))},
                    variables=jax.device_get({"params": params["params"]}),
                    source=f"{os.path.abspath(config.workdir)} step {int(state.step)}")
  return path


def held_out_pairs(config) -> dict:
  """config.eval's pairs of synthetic identities the training never saw, stacked."""
  from data_pipelines.poses import pairs
  d, e = config.data, config.eval
  clips = pairs.synthetic_clips(e.num_clips, d.synthetic_frames, e.seed, d.height, d.width)
  return pairs.PosePairSource(clips, e.pairs_per_clip, e.seed).arrays()


def alignment_table(config, model, variables) -> dict:
  """evaluation.evaluate of the aligner (module, variables) on `held_out_pairs`."""
  apply = jax.jit(lambda *a: model.apply(variables, *a)["final"])
  return evaluation.evaluate(apply, held_out_pairs(config), seed=config.eval.seed)


def evaluate(config, model, params) -> dict:
  """The alignment table on held-out synthetic identities, written to the workdir."""
  table = alignment_table(config, model, params)
  if jax.process_index() == 0:
    with open(os.path.join(config.workdir, "alignment.json"), "w", encoding="utf-8") as f:
      json.dump(table, f, indent=2)
    with open(os.path.join(config.workdir, "alignment.md"), "w", encoding="utf-8") as f:
      f.write(evaluation.markdown(table) + "\n")
  return table


def run(config, dataset=None):
  """Trains to config.train.num_steps (resuming), exports, evaluates; returns the TrainState."""
  model = build_model(config)
  m = misalignment(config)
  dataset = pair_dataset(config) if dataset is None else dataset
  example = jax.tree.map(lambda x: jnp.zeros((1,) + x.shape[1:], x.dtype), dataset[0])
  args = (example["reference"], example["reference_scores"], example["driving"],
          example["driving_scores"])
  state, _ = fit(config, model, make_loss_fn(model, m), args, dataset=dataset,
                 num_steps=config.train.num_steps)
  path = export(config, model, state)
  logging.info("pose aligner at step %d written to %s", int(state.step), path)
  if config.eval.num_clips > 0:
    params = state.ema if state.ema is not None else state.params
    table = evaluate(config, model, jax.device_get({"params": params["params"]}))
    logging.info("alignment error (mean distance / torso length) on held-out identities:\n%s",
                 evaluation.markdown(table))
  return state
