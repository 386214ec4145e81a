"""Job 'train_vividpose': VividPose training (configs/vividpose.py, configs/vividpose_tiny.py).

The denoising U-Net (SVD with reference attention and the ID branch), the ReferenceNet (SD 2.1),
the identity-aware controller and the geometry-aware pose controller train together on annotated
records (records.METHOD_FIELDS['vividpose']) with the EDM objective of
methods/vividpose/objective.py; the ReferenceNet runs inside every step. What trains is
config.train.trainable (fnmatch patterns over variable paths; the paper trains all four end to
end: 'params/*'); the rest is frozen in TrainState.frozen.

Starting weights, each optional (a fresh module of config.model.preset otherwise, logged):
  model.unet_dir             python -m conversion svd-unet: SVD-img2vid's unet/ (the ID group's
                             to_k_id / to_v_id keep their initialization, to_v_id zero, so the
                             start is exactly SVD) or a VividPose export (ID group included)
  model.reference_net_dir    python -m conversion sd-unet: SD 2.1's unet/
  model.pose_controller_dir  a vividpose-pose-controller folder (this job's export)
  model.id_controller_dir    a vividpose-id-controller folder (this job's export)
A folder's own config decides its module's shapes. At the end every network is written as a
load_pretrained folder under <workdir>/export/ (kinds svd-unet, sd-unet,
vividpose-pose-controller, vividpose-id-controller; load_vividpose reads the three of VividPose).
"""
import dataclasses

import jax.numpy as jnp
from absl import logging

from sem_repa_jax.jobs import _parts, train_animator
from sem_repa_jax.methods.vividpose.id_controller import IDControllerConfig
from sem_repa_jax.methods.stableanimator.objective import draw
from sem_repa_jax.methods.vividpose.model import (PRESETS, VividPoseConfig, build_models,
                                                  vividpose_unet)
from sem_repa_jax.methods.vividpose.objective import (REFERENCE_NET, VividPoseNetworks,
                                                      batch_fields, vividpose_loss)
from sem_repa_jax.methods.vividpose.pose_controller import PoseControllerConfig
from sem_repa_jax.models.config_fields import from_fields
from sem_repa_jax.models.sd.unet_config import UNet2DConditionConfig
from sem_repa_jax.models.svd.unet import UNetSpatioTemporalConfig

# (config.model field of the folder, its conversion kind, the network's name in the tree)
FOLDERS = (("unet_dir", "svd-unet", "unet"), ("reference_net_dir", "sd-unet", REFERENCE_NET),
           ("pose_controller_dir", "vividpose-pose-controller", "pose_controller"),
           ("id_controller_dir", "vividpose-id-controller", "id_controller"))
# The ID group a plain SVD U-Net lacks: to_k_id / to_v_id of every cross-attention.
_ID_GROUP = ("/to_k_id/", "/to_v_id/")


def model_config(config) -> VividPoseConfig:
  """The preset (config.model.preset) with every network given a folder taking that folder's
  config; a plain SVD U-Net gets VividPose's ID group (as many tokens as the ID controller)."""
  m = config.model
  if m.preset not in PRESETS:
    raise ValueError(f"config.model.preset {m.preset!r}: expected one of {sorted(PRESETS)}")
  preset = PRESETS[m.preset]
  classes = {"unet": UNetSpatioTemporalConfig, REFERENCE_NET: UNet2DConditionConfig,
             "pose_controller": PoseControllerConfig, "id_controller": IDControllerConfig}
  parts = {}
  for field, kind, name in FOLDERS:
    path = m.get(field)
    parts[name] = (from_fields(classes[name], _parts.folder_config(path, field, kind),
                               f"config.model.{field}") if path else getattr(preset, name))
  if parts["unet"].extra_context_tokens == 0:
    parts["unet"] = vividpose_unet(parts["unet"], parts["id_controller"].num_tokens)
  return dataclasses.replace(preset, **parts)


def build_networks(config) -> VividPoseNetworks:
  vividpose, reference_net = build_models(
      model_config(config), dtype=jnp.dtype(config.dtype),
      param_dtype=jnp.dtype(config.param_dtype), attention=config.attention,
      remat_policy=config.remat_policy)
  return VividPoseNetworks(vividpose, reference_net)


def make_loss_fn(networks: VividPoseNetworks, cfg):
  def loss_fn(variables, batch, rng):
    return vividpose_loss(networks, variables, batch, draw(rng, batch["video_latents"], cfg), cfg)
  return loss_fn


def init_args(networks: VividPoseNetworks, example):
  """What VividPoseNetworks.init takes after the key, from an example batch of one."""
  x0 = example["video_latents"]
  u = networks.vividpose.unet_config
  sample = jnp.zeros(x0.shape[:-1] + (u.in_channels,), jnp.float32)
  f32 = lambda k: jnp.zeros(example[k].shape, jnp.float32)
  return (sample, jnp.zeros((1,)), example["clip_embeds"], jnp.zeros((1, u.num_added_time_ids)),
          example["id_embeds"], f32("dense_maps"), f32("pose_images"),
          example["reference_latents"])


def check_example(networks: VividPoseNetworks, example, where: str, fields) -> None:
  """The records' shapes against the networks', before anything is planned."""
  v = networks.vividpose
  problems = _parts.latent_problems(example, v.unet_config.in_channels,
                                    ("pose_images", "dense_maps"),
                                    v.pose_controller_config.compression,
                                    "the pose controller's", "face_weight_masks" in fields)
  for name, width, what in (("clip_embeds", v.unet_config.cross_attention_dim[0],
                             "the U-Net's cross-attention"),
                            ("id_embeds", v.id_controller_config.id_embeddings_dim,
                             "the ID controller")):
    if example[name].shape[-1] != width:
      problems.append(f"{name} of width {example[name].shape[-1]}; {what} takes {width}")
  if problems:
    raise ValueError(f"{where}: " + "; ".join(problems))


def prepare_state_fn(config):
  """Loads the folders given; a plain SVD U-Net's ID group keeps its initialization (to_v_id
  zero: the start is exactly SVD)."""
  keep = lambda name: any(g in name for g in _ID_GROUP)
  return _parts.prepare_from_folders(config, FOLDERS, {"unet": {"keep": keep}})


def export(config, networks: VividPoseNetworks, state) -> str:
  """Every network as a load_pretrained folder <workdir>/export/{unet, reference_net,
  pose_controller, id_controller}."""
  v = networks.vividpose
  configs = {"unet": v.unet_config, REFERENCE_NET: networks.reference_net.config,
             "pose_controller": v.pose_controller_config, "id_controller": v.id_controller_config}
  return _parts.export_parts(config, state, [(name, kind, configs[name])
                                             for _, kind, name in FOLDERS])


def run(config, dataset=None):
  """Trains to config.train.num_steps (resuming from the workdir's last checkpoint), exports the
  networks and returns the final TrainState. `dataset`: this process's batches in place of
  config.data.records' (a grain dataset, as `_records.record_dataset` gives)."""
  networks = build_networks(config)
  cfg = train_animator.objective_config(config)
  fields = batch_fields(cfg)
  state = _parts.fit_on_records(
      config, networks, make_loss_fn(networks, cfg), fields,
      lambda example, where: check_example(networks, example, where, fields),
      lambda example: init_args(networks, example), prepare_state_fn(config), dataset)
  root = export(config, networks, state)
  logging.info("VividPose training done at step %d; networks in %s", int(state.step), root)
  return state
