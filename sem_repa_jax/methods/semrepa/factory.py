"""SemanticREPA's networks from a job config: the CogVideoX backbone's config, the alignment
modules' configs, and `build`, the factory saved stage-1 folders name (kind 'semrepa-alignment').

Config fields read here are documented in configs/semrepa.py.
"""
import dataclasses

import jax.numpy as jnp
import numpy as np

from sem_repa_jax.diffusion import schedules
from sem_repa_jax.methods.semrepa.id_alignment import IDAlignmentConfig
from sem_repa_jax.methods.semrepa.model import SemanticREPA
from sem_repa_jax.methods.semrepa.structure_alignment import structure_alignment_config
from sem_repa_jax.models.cogvideox.transformer import PRESETS, CogVideoXTransformerConfig
from sem_repa_jax.models.pretrained import read_pretrained_config


def backbone_config(config) -> CogVideoXTransformerConfig:
  """The CogVideoX config: from the converted weights' folder when given, else preset + overrides."""
  m = config.model
  if m.pretrained_transformer:
    return CogVideoXTransformerConfig(**read_pretrained_config(m.pretrained_transformer)
                                      ["module_kwargs"]["config"])
  if m.backbone_preset not in PRESETS:
    raise ValueError(f"config.model.backbone_preset={m.backbone_preset!r}: expected one of "
                     f"{sorted(PRESETS)}")
  return dataclasses.replace(PRESETS[m.backbone_preset], **dict(m.backbone))


def identity_config(config) -> IDAlignmentConfig:
  d = dict(config.model.identity)
  d["channels"] = tuple(d["channels"])
  return IDAlignmentConfig(latent_channels=config.model.latent_channels, **d)


def module_kwargs(config, with_backbone: bool) -> dict:
  backbone = backbone_config(config)
  structure = structure_alignment_config(backbone, config.model.structure_layers,
                                         config.model.latent_channels)
  return dict(structure=dataclasses.asdict(structure),
              identity=dataclasses.asdict(identity_config(config)),
              backbone=dataclasses.asdict(backbone) if with_backbone else None,
              dtype=config.dtype, param_dtype=config.param_dtype, attention=config.attention,
              remat_policy=config.remat_policy)


def backbone_kwargs(config) -> dict:
  """The module kwargs of the backbone alone, as the CogVideoX converter writes them."""
  return {"config": dataclasses.asdict(backbone_config(config)), "dtype": config.dtype,
          "param_dtype": config.param_dtype}


def build(structure: dict, identity: dict, backbone=None, dtype="float32", param_dtype="float32",
          attention="xla", remat_policy="none") -> SemanticREPA:
  """Factory from JSON kwargs (used by save_pretrained/load_pretrained and the jobs)."""
  identity = dict(identity, channels=tuple(identity["channels"]))
  return SemanticREPA(structure=CogVideoXTransformerConfig(**structure),
                      identity=IDAlignmentConfig(**identity),
                      backbone=None if backbone is None else CogVideoXTransformerConfig(**backbone),
                      dtype=jnp.dtype(dtype), param_dtype=jnp.dtype(param_dtype),
                      attention=attention, remat_policy=remat_policy)


def alphas_cumprod(config) -> np.ndarray:
  return schedules.cogvideox_alphas_cumprod(config.diffusion.snr_shift_scale,
                                            num_train_timesteps=config.diffusion.num_train_timesteps)
