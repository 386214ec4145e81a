"""Both towers of a transformers CLIPModel (e.g. openai/clip-vit-large-patch14): the image and text
embeddings that CLIP compares, as get_image_features and get_text_features give them.

The towers are clip.py's CLIPVisionEncoder and clip_text.py's CLIPTextEncoder, each with its own
projection into the shared projection_dim space. logit_scale (log of CLIP's inverse temperature)
is kept as a parameter so that a converted folder holds the whole CLIPModel; the embeddings do not
use it.
"""
import math
from dataclasses import dataclass, field
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from sem_repa_jax.models.config_fields import from_fields
from sem_repa_jax.models.encoders import clip, clip_text
from sem_repa_jax.nn.partitioning import as_dtype

LOGIT_SCALE_INIT = math.log(1 / 0.07)   # transformers' logit_scale_init_value, 2.6592


@dataclass(frozen=True)
class CLIPConfig:
  vision: clip.CLIPVisionConfig = field(default_factory=clip.CLIPVisionConfig)
  text: clip_text.CLIPTextConfig = field(default_factory=clip_text.CLIPTextConfig)


def config_from_transformers(cfg: dict) -> CLIPConfig:
  """From a full CLIPConfig config.json (vision_config, text_config, projection_dim)."""
  cfg = dict(cfg)
  for key in ("vision_config", "text_config"):
    # Configs written in 2021 also hold {key}_dict, which transformers reads in place of {key}
    # (its missing fields at their defaults).
    if isinstance(cfg.get(key + "_dict"), dict):
      cfg[key] = cfg[key + "_dict"]
    if not isinstance(cfg.get(key), dict):
      raise ValueError(f"config.json has no {key} entry; expected a CLIPModel config "
                       "(model_type 'clip')")
  config = CLIPConfig(clip.config_from_transformers(cfg), clip_text.config_from_transformers(cfg))
  if config.vision.projection_dim != config.text.projection_dim:
    raise ValueError(f"projection_dim: vision {config.vision.projection_dim} and text "
                     f"{config.text.projection_dim} differ")
  return config


def config_from_dict(values: dict) -> CLIPConfig:
  """The CLIPConfig a converted folder records ({'vision': {...}, 'text': {...}})."""
  towers = from_fields(CLIPConfig, values, "CLIP")
  return CLIPConfig(from_fields(clip.CLIPVisionConfig, dict(towers.vision), "CLIP vision"),
                    from_fields(clip_text.CLIPTextConfig, dict(towers.text), "CLIP text"))


class CLIPModel(nn.Module):
  """`apply(v, pixels, input_ids, attention_mask=None) -> dict(image_embeds, text_embeds,
  logit_scale)`; one tower alone with method='image_features' (pixels) or 'text_features'
  (input_ids, attention_mask=None).

  pixels (B, S, S, 3) CLIP-normalized (eval/text_score.clip_pixels); input_ids (B', L) from
  encoders/tokenize.tokenize_clip. The embeddings are unnormalized, as transformers returns them.
  """
  config: CLIPConfig
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  attention: str = "xla"
  remat_policy: str = "none"

  def setup(self):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, attention=self.attention,
              remat_policy=self.remat_policy)
    self.vision_model = clip.CLIPVisionEncoder(self.config.vision, **kw)
    self.text_model = clip_text.CLIPTextEncoder(self.config.text, **kw)
    self.logit_scale = self.param("logit_scale", nn.initializers.constant(LOGIT_SCALE_INIT), (),
                                  self.param_dtype)

  def image_features(self, pixels):
    return self.vision_model(pixels)["image_embeds"]

  def text_features(self, input_ids, attention_mask=None):
    return self.text_model(input_ids, attention_mask)["text_embeds"]

  def __call__(self, pixels, input_ids, attention_mask=None):
    return {"image_embeds": self.image_features(pixels),
            "text_embeds": self.text_features(input_ids, attention_mask),
            "logit_scale": self.logit_scale}


def build(config: dict, dtype: str = "float32", param_dtype: str = "float32",
          attention: str = "xla", remat_policy: str = "none") -> CLIPModel:
  """Factory from JSON-able arguments (used by load_pretrained on converted folders)."""
  return CLIPModel(config_from_dict(config), dtype=as_dtype(dtype),
                   param_dtype=as_dtype(param_dtype), attention=attention,
                   remat_policy=remat_policy)

