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

import jax.numpy as jnp
from absl import logging

from sem_repa_jax.jobs import _parts
from sem_repa_jax.methods.stableanimator.face_encoder import FaceEncoderConfig
from sem_repa_jax.methods.stableanimator.model import StableAnimator, adapter_source
from sem_repa_jax.methods.stableanimator.objective import (BATCH_FIELDS, ObjectiveConfig, draw,
                                                          stableanimator_loss)
from sem_repa_jax.methods.stableanimator.posenet import PoseNetConfig
from sem_repa_jax.models.config_fields import from_fields
from sem_repa_jax.models.svd import unet as unet_lib

FACE_TOKENS = 4
# (config.model field of the folder, its conversion kind, the module name in the variable tree)
FOLDERS = (("unet_dir", "svd-unet", "unet"), ("pose_net_dir", "pose-net", "pose_net"),
           ("face_encoder_dir", "face-encoder", "face_encoder"))


def module_configs(config):
  """(UNetSpatioTemporalConfig with the ID adapter, PoseNetConfig, FaceEncoderConfig) from the
  starting folders where given, else from the presets and config.model overrides."""
  m = config.model
  if m.unet_dir:
    u = _parts.folder_config(m.unet_dir, "unet_dir", "svd-unet")
  else:
    if m.unet_preset not in unet_lib.PRESETS:
      raise ValueError(f"config.model.unet_preset {m.unet_preset!r}: expected one of "
                       f"{sorted(unet_lib.PRESETS)}")
    u = {**dataclasses.asdict(unet_lib.PRESETS[m.unet_preset]), **m.unet.to_dict()}
  u.update(extra_context_tokens=FACE_TOKENS, id_alignment="distribution")
  unet_cfg = from_fields(unet_lib.UNetSpatioTemporalConfig, u, "config.model.unet")
  width, channels = unet_cfg.cross_attention_dim[0], unet_cfg.block_out_channels[0]
  pose = (_parts.folder_config(m.pose_net_dir, "pose_net_dir", "pose-net") if m.pose_net_dir else
          {"out_channels": channels, **m.pose_net.to_dict()})
  face = (_parts.folder_config(m.face_encoder_dir, "face_encoder_dir", "face-encoder")
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
  problems = _parts.latent_problems(example, model.unet_config.in_channels, ("pose_images",),
                                    model.pose_net_config.compression, "the PoseNet's")
  if problems:
    raise ValueError(f"{where}: " + "; ".join(problems))


def prepare_state_fn(config):
  return _parts.prepare_from_folders(config, FOLDERS, {"unet": {"derive": adapter_source}})


def export(config, model, state) -> str:
  """The trained networks as load_pretrained folders <workdir>/export/{unet,pose_net,
  face_encoder} (_parts.export_parts)."""
  configs = {"unet": model.unet_config, "pose_net": model.pose_net_config,
             "face_encoder": model.face_encoder_config}
  return _parts.export_parts(config, state, [(name, kind, configs[name])
                                             for _, kind, name in FOLDERS])


def run(config, dataset=None):
  """Trains to config.train.num_steps (resuming from the workdir's last checkpoint), exports the
  networks and returns the final TrainState. `dataset`: this process's batches in place of
  config.data.records' (a grain dataset, as `_records.record_dataset` gives)."""
  model = build_model(config)
  state = _parts.fit_on_records(
      config, model, make_loss_fn(model, objective_config(config)), BATCH_FIELDS,
      lambda example, where: check_example(model, example, where),
      lambda example: init_args(model, example), prepare_state_fn(config), dataset)
  root = export(config, model, state)
  logging.info("StableAnimator training done at step %d; networks in %s", int(state.step), root)
  return state
