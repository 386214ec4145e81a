"""Job 'train_animator': StableAnimator training (configs/stableanimator.py and its variants).

The U-Net (with the distribution-aware ID adapter), PoseNet and face encoder train together on
annotated records (records.METHOD_FIELDS['stableanimator']) with the face-mask weighted EDM
objective and the official conditioning dropout (methods/stableanimator/objective.py). What trains
is config.train.trainable (fnmatch patterns over variable paths; official: PoseNet, the face
encoder and every U-Net 'attentions' parameter); the rest is frozen in TrainState.frozen.

Starting weights, each optional (a fresh module otherwise, logged):
  model.unet_dir          python -m conversion svd-unet: SVD-XT's unet/ (the adapter's id_to_k /
                          id_to_v then start as copies of to_k / to_v, the official
                          initialization) or StableAnimator's unet.pth --config (adapter included)
  model.pose_net_dir      python -m conversion pose-net (pose_net.pth)
  model.face_encoder_dir  python -m conversion face-encoder (face_encoder.pth)
A folder's own config decides its module's shapes; config.model.{unet,pose_net,face_encoder}
override the presets when there is no folder. At the end the trained networks are written as
load_pretrained folders under <workdir>/export/ (kinds svd-unet, pose-net, face-encoder).
"""
import dataclasses
import os

import jax
import jax.numpy as jnp
from absl import logging

from sem_repa_jax.jobs import _records
from sem_repa_jax.methods.stableanimator.face_encoder import FaceEncoderConfig
from sem_repa_jax.methods.stableanimator.model import StableAnimator, adapter_source
from sem_repa_jax.methods.stableanimator.objective import (BATCH_FIELDS, ObjectiveConfig, draw,
                                                          stableanimator_loss)
from sem_repa_jax.methods.stableanimator.posenet import PoseNetConfig
from sem_repa_jax.models.config_fields import from_fields
from sem_repa_jax.models.pretrained import read_pretrained_config, save_pretrained
from sem_repa_jax.models.svd import unet as unet_lib
from sem_repa_jax.training.checkpoint import load_into
from sem_repa_jax.training.fit import fit
from sem_repa_jax.training.train_state import frozen_outside

FACE_TOKENS = 4
# (config.model field of the folder, its conversion kind, the module name in the variable tree)
FOLDERS = (("unet_dir", "svd-unet", "unet"), ("pose_net_dir", "pose-net", "pose_net"),
           ("face_encoder_dir", "face-encoder", "face_encoder"))
EXPORT_DIRNAME = "export"


def _folder_config(path: str, field: str, kind: str) -> dict:
  if not os.path.isdir(path):
    raise FileNotFoundError(f"config.model.{field} = {path}: no such folder (write it with "
                            f"`python -m conversion {kind} --src ... --dst {path}`)")
  cfg = read_pretrained_config(path)
  if cfg["kind"] != kind:
    raise ValueError(f"config.model.{field} = {path} holds a converted {cfg['kind']!r} model; "
                     f"expected a {kind!r} one (python -m conversion {kind})")
  return dict(cfg["module_kwargs"]["config"])


def module_configs(config):
  """(UNetSpatioTemporalConfig with the ID adapter, PoseNetConfig, FaceEncoderConfig) from the
  starting folders where given, else from the presets and config.model overrides."""
  m = config.model
  if m.unet_dir:
    u = _folder_config(m.unet_dir, "unet_dir", "svd-unet")
  else:
    if m.unet_preset not in unet_lib.PRESETS:
      raise ValueError(f"config.model.unet_preset {m.unet_preset!r}: expected one of "
                       f"{sorted(unet_lib.PRESETS)}")
    u = {**dataclasses.asdict(unet_lib.PRESETS[m.unet_preset]), **m.unet.to_dict()}
  u.update(extra_context_tokens=FACE_TOKENS, id_alignment="distribution")
  unet_cfg = from_fields(unet_lib.UNetSpatioTemporalConfig, u, "config.model.unet")
  width, channels = unet_cfg.cross_attention_dim[0], unet_cfg.block_out_channels[0]
  pose = (_folder_config(m.pose_net_dir, "pose_net_dir", "pose-net") if m.pose_net_dir else
          {"out_channels": channels, **m.pose_net.to_dict()})
  face = (_folder_config(m.face_encoder_dir, "face_encoder_dir", "face-encoder")
          if m.face_encoder_dir else
          {"cross_attention_dim": width, "clip_embeddings_dim": width,
           **m.face_encoder.to_dict()})
  return (unet_cfg, from_fields(PoseNetConfig, pose, "config.model.pose_net"),
          from_fields(FaceEncoderConfig, face, "config.model.face_encoder"))


def build_model(config) -> StableAnimator:
  unet_cfg, pose_cfg, face_cfg = module_configs(config)
  return StableAnimator(unet_cfg, pose_cfg, face_cfg, dtype=jnp.dtype(config.dtype),
                        param_dtype=jnp.dtype(config.param_dtype), attention=config.attention,
                        remat_policy=config.remat_policy)


def objective_config(config) -> ObjectiveConfig:
  o = config.objective.to_dict()
  o["added_time_ids"] = tuple(o["added_time_ids"])
  return from_fields(ObjectiveConfig, o, "config.objective")


def make_loss_fn(model, cfg: ObjectiveConfig):
  def loss_fn(variables, batch, rng):
    draws = draw(rng, batch["video_latents"], cfg)
    network = lambda *args: model.apply(variables, *args)
    return stableanimator_loss(network, batch, draws, cfg)
  return loss_fn


def init_args(model, example):
  """What model.init takes, from an example batch of one (shapes only)."""
  x0 = example["video_latents"]
  sample = jnp.zeros(x0.shape[:-1] + (model.unet_config.in_channels,), jnp.float32)
  return (sample, jnp.zeros((1,)), example["clip_embeds"], example["id_embeds"],
          jnp.zeros(example["pose_images"].shape, jnp.float32), jnp.zeros((1, 3)))


def check_example(model, example, where: str) -> None:
  """The records' shapes against the model's, before anything is planned."""
  x0 = example["video_latents"]
  u, p = model.unet_config, model.pose_net_config
  problems = []
  if 2 * x0.shape[-1] != u.in_channels:
    problems.append(f"video_latents have {x0.shape[-1]} channels; the U-Net takes "
                    f"{u.in_channels} = latents + reference latents")
  if example["reference_latents"].shape[1:] != x0.shape[2:]:
    problems.append(f"reference_latents {example['reference_latents'].shape[1:]} != one frame of "
                    f"video_latents {x0.shape[2:]}")
  pose = example["pose_images"].shape
  if (pose[1], pose[2] // p.compression, pose[3] // p.compression) != x0.shape[1:4]:
    problems.append(f"pose_images {pose[1:4]} over the PoseNet's compression {p.compression} do "
                    f"not give the latent frames {x0.shape[1:4]}")
  if example["face_weight_masks"].shape[1:] != x0.shape[1:4]:
    problems.append(f"face_weight_masks {example['face_weight_masks'].shape[1:]} are not at the "
                    f"latent size {x0.shape[1:4]}")
  if problems:
    raise ValueError(f"{where}: " + "; ".join(problems))


def prepare_state_fn(config):
  m = config.model

  def prepare(state):
    for field, kind, name in FOLDERS:
      path = m.get(field)
      if not path:
        logging.info("%s starts from a fresh initialization (config.model.%s is empty)", name,
                     field)
        continue
      derive = adapter_source if name == "unet" else None
      state = load_into(state, path, ("params", "frozen"), name, derive=derive)
      logging.info("%s loaded from %s", name, path)
    return state
  return prepare


def export(config, model, state) -> str:
  """The trained networks (state.variables(), or the EMA of the trained part where kept) as
  load_pretrained folders <workdir>/export/{unet,pose_net,face_encoder}."""
  from sem_repa_jax.training.train_state import merge
  params = state.ema if state.ema is not None else state.params
  variables = jax.device_get(merge(params, state.frozen))
  root = os.path.join(config.workdir, EXPORT_DIRNAME)
  configs = {"unet": model.unet_config, "pose_net": model.pose_net_config,
             "face_encoder": model.face_encoder_config}
  if jax.process_index() == 0:
    for _, kind, name in FOLDERS:
      kwargs = {"config": dataclasses.asdict(configs[name]), "dtype": str(jnp.dtype(config.dtype)),
                "param_dtype": str(jnp.dtype(config.param_dtype))}
      tree = {col: sub[name] for col, sub in variables.items() if name in sub}
      save_pretrained(os.path.join(root, name), kind=kind, module_kwargs=kwargs, variables=tree,
                      source=f"{os.path.abspath(config.workdir)} step {int(state.step)}"
                             f"{' (EMA)' if state.ema is not None else ''}")
  return root


def run(config, dataset=None):
  """Trains to config.train.num_steps (resuming from the workdir's last checkpoint), exports the
  networks and returns the final TrainState. `dataset`: this process's batches in place of
  config.data.records' (a grain dataset, as `_records.record_dataset` gives)."""
  model = build_model(config)
  cfg = objective_config(config)
  where = "the given dataset" if dataset is not None else \
      f"config.data.records = {config.data.records}"
  dataset = _records.record_dataset(config, BATCH_FIELDS) if dataset is None else dataset
  example = _records.example_batch(dataset)
  check_example(model, example, where)
  args = init_args(model, example)
  abstract = jax.eval_shape(model.init, jax.random.key(0), *args)
  frozen = frozen_outside(abstract, config.train.trainable)
  state, _ = fit(config, model, make_loss_fn(model, cfg), args, dataset=dataset,
                 frozen_prefixes=frozen, prepare_state=prepare_state_fn(config),
                 num_steps=config.train.num_steps)
  root = export(config, model, state)
  logging.info("StableAnimator training done at step %d; networks in %s", int(state.step), root)
  return state
