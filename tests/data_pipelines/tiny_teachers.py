"""Tiny random teacher models saved as load_pretrained folders (no conversion, no torch): ArcFace,
the SVD temporal VAE (spatial compression 8) and a CLIP vision encoder, for the annotation tests."""
import dataclasses
import importlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sem_repa_jax.models import registry
from sem_repa_jax.models.pretrained import save_pretrained

ARCFACE_FEATURES = 8
CLIP_PROJECTION = 12


def random_folder(dst: str, kind: str, module_kwargs: dict, input_shape, seed: int = 0) -> str:
  """Saves the `kind` module of `module_kwargs` with random variables (norm scales and variances
  in [0.5, 1.5], the rest N(0, 0.1^2)) as a load_pretrained folder DST; returns DST."""
  mod, fn = registry.factory_of(kind).split(":")
  module = getattr(importlib.import_module(mod), fn)(**module_kwargs)
  r = np.random.default_rng(seed)
  abstract = nn.unbox(jax.eval_shape(module.init, jax.random.key(0), jnp.zeros(input_shape)))
  variables = jax.tree_util.tree_map_with_path(
      lambda p, a: (r.uniform(0.5, 1.5, a.shape) if "var" in str(p[-1]) or "scale" in str(p[-1])
                    else r.standard_normal(a.shape) * 0.1).astype(np.float32), abstract)
  save_pretrained(dst, kind=kind, module_kwargs=module_kwargs, variables=variables)
  return dst


def arcface(dst: str, features: int = ARCFACE_FEATURES) -> str:
  from sem_repa_jax.models.encoders.arcface import IResNetConfig, config_to_json
  cfg = IResNetConfig(layers=(1, 1, 1, 1), widths=(4, 4, 8, 8), num_features=features)
  return random_folder(dst, "arcface", dict(config=config_to_json(cfg)), (1, 112, 112, 3))


def svd_vae(dst: str) -> str:
  from sem_repa_jax.models.svd.vae import VAEConfig
  cfg = VAEConfig(block_out_channels=(32, 32, 32, 32), layers_per_block=1)
  return random_folder(dst, "svd-vae", dict(config=dataclasses.asdict(cfg)), (1, 1, 16, 16, 3))


def clip_vision(dst: str, projection: int = CLIP_PROJECTION) -> str:
  from sem_repa_jax.models.encoders.clip import CLIPVisionConfig
  cfg = CLIPVisionConfig(hidden_size=16, intermediate_size=24, num_hidden_layers=1,
                         num_attention_heads=2, patch_size=16, image_size=32,
                         projection_dim=projection)
  return random_folder(dst, "clip-vision", dict(config=dataclasses.asdict(cfg)), (1, 32, 32, 3))
