"""transformers CLIPVisionModelWithProjection folder (e.g. SVD's image_encoder/) -> Flax CLIPVisionEncoder.

Checkpoints written by older transformers also hold the position_ids buffer; it is checked to be
0..N-1 and set aside (the model derives positions from the patch grid).
"""
import numpy as np

from conversion import driver, mapping
from conversion.mapping import ConversionError, Rule
from sem_repa_jax.models.registry import factory_of

KIND = "clip-vision"
HELP = "transformers CLIPVisionModelWithProjection folder (config.json + safetensors) -> Flax CLIP"
FACTORY = factory_of(KIND)

_POSITION_IDS = "vision_model.embeddings.position_ids"


def rules(cfg) -> list:
  d, h = cfg.hidden_size, cfg.num_attention_heads
  hd = d // h
  layer = r"vision_model\.encoder\.layers\.(\d+)"
  return [
      Rule(r"vision_model\.embeddings\.class_embedding", "params/class_embedding"),
      Rule(r"vision_model\.embeddings\.patch_embedding\.weight",
           "params/patch_embedding/kernel", mapping.conv2d),
      Rule(r"vision_model\.embeddings\.position_embedding\.weight", "params/position_embedding"),
      Rule(r"vision_model\.(pre_layrnorm|post_layernorm)\.weight", r"params/\1/scale"),
      Rule(r"vision_model\.(pre_layrnorm|post_layernorm)\.bias", r"params/\1/bias"),
      Rule(layer + r"\.self_attn\.(q_proj|k_proj|v_proj)\.weight", r"params/layers/\2/kernel",
           lambda w: mapping.split_axis(w.T, -1, (h, hd)), stack=1),
      Rule(layer + r"\.self_attn\.(q_proj|k_proj|v_proj)\.bias", r"params/layers/\2/bias",
           lambda b: mapping.split_axis(b, 0, (h, hd)), stack=1),
      Rule(layer + r"\.self_attn\.out_proj\.weight", "params/layers/out_proj/kernel",
           lambda w: mapping.split_axis(w.T, 0, (h, hd)), stack=1),
      Rule(layer + r"\.self_attn\.out_proj\.bias", "params/layers/out_proj/bias", stack=1),
      Rule(layer + r"\.(layer_norm1|layer_norm2)\.weight", r"params/layers/\2/scale", stack=1),
      Rule(layer + r"\.(layer_norm1|layer_norm2)\.bias", r"params/layers/\2/bias", stack=1),
      Rule(layer + r"\.mlp\.(fc1|fc2)\.weight", r"params/layers/\2/kernel", mapping.linear,
           stack=1),
      Rule(layer + r"\.mlp\.(fc1|fc2)\.bias", r"params/layers/\2/bias", stack=1),
      Rule(r"visual_projection\.weight", "params/visual_projection/kernel", mapping.linear),
  ]


def _without_position_ids(ckpt, src):
  """The checkpoint without its position-id buffer, which must be the identity 0..n-1."""
  if _POSITION_IDS in ckpt.keys():
    ids = np.asarray(ckpt.get(_POSITION_IDS)).reshape(-1)
    if not np.array_equal(ids, np.arange(ids.size)):
      raise ConversionError(src, [f"{_POSITION_IDS} is not 0..{ids.size - 1}; this model does "
                                  "not support permuted positions"])
  return mapping.SubsetSource(ckpt, [n for n in ckpt.keys() if n != _POSITION_IDS])


def target_shapes(module) -> dict:
  import jax.numpy as jnp
  c = module.config
  pixels = jnp.zeros((1, c.image_size, c.image_size, c.num_channels), jnp.float32)
  return mapping.abstract_shapes(module.init, pixels)


def convert(src: str, dst: str, dtype: str = "float32", variant=None) -> str:
  from sem_repa_jax.models.encoders import clip
  read = driver.folder(clip.config_from_transformers, view=_without_position_ids,
                       model_types=("clip_vision_model", "clip"),
                       expected="a CLIPVisionModelWithProjection folder")
  return driver.convert(src, dst, dtype, kind=KIND, read=read, rules=rules,
                        target_shapes=target_shapes, variant=variant)
