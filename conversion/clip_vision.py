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


def layer_rules(cfg, source: str, target: str) -> list:
  """Rules of the scanned CLIPEncoderLayer stack under `target` (e.g. 'params/layers') from the
  torch layers matched by `source`, a pattern whose group 1 is the layer index (either tower)."""
  h = cfg.num_attention_heads
  hd = cfg.hidden_size // h
  return [
      Rule(source + r"\.self_attn\.(q_proj|k_proj|v_proj)\.weight", target + r"/\2/kernel",
           lambda w: mapping.split_axis(w.T, -1, (h, hd)), stack=1),
      Rule(source + r"\.self_attn\.(q_proj|k_proj|v_proj)\.bias", target + r"/\2/bias",
           lambda b: mapping.split_axis(b, 0, (h, hd)), stack=1),
      Rule(source + r"\.self_attn\.out_proj\.weight", target + "/out_proj/kernel",
           lambda w: mapping.split_axis(w.T, 0, (h, hd)), stack=1),
      Rule(source + r"\.self_attn\.out_proj\.bias", target + "/out_proj/bias", stack=1),
      Rule(source + r"\.(layer_norm1|layer_norm2)\.weight", target + r"/\2/scale", stack=1),
      Rule(source + r"\.(layer_norm1|layer_norm2)\.bias", target + r"/\2/bias", stack=1),
      Rule(source + r"\.mlp\.(fc1|fc2)\.weight", target + r"/\2/kernel", mapping.linear,
           stack=1),
      Rule(source + r"\.mlp\.(fc1|fc2)\.bias", target + r"/\2/bias", stack=1),
  ]


def rules(cfg, target: str = "params") -> list:
  """The vision tower's Rules, its Flax parameters under `target` ('params/vision_model' inside
  the CLIPModel of conversion/clip.py)."""
  return [
      Rule(r"vision_model\.embeddings\.class_embedding", target + "/class_embedding"),
      Rule(r"vision_model\.embeddings\.patch_embedding\.weight",
           target + "/patch_embedding/kernel", mapping.conv2d),
      Rule(r"vision_model\.embeddings\.position_embedding\.weight",
           target + "/position_embedding"),
      Rule(r"vision_model\.(pre_layrnorm|post_layernorm)\.weight", target + r"/\1/scale"),
      Rule(r"vision_model\.(pre_layrnorm|post_layernorm)\.bias", target + r"/\1/bias"),
      *layer_rules(cfg, r"vision_model\.encoder\.layers\.(\d+)", target + "/layers"),
      Rule(r"visual_projection\.weight", target + "/visual_projection/kernel", mapping.linear),
  ]


def position_ids_set_aside(ckpt, src, names: tuple) -> mapping.Source:
  """The checkpoint without the position-id buffers `names` (older transformers saved them), each
  checked to be the identity 0..n-1."""
  problems = []
  for name in names:
    if name in ckpt.keys():
      ids = np.asarray(ckpt.get(name)).reshape(-1)
      if not np.array_equal(ids, np.arange(ids.size)):
        problems.append(f"{name} is not 0..{ids.size - 1}; this model does not support permuted "
                        "positions")
  if problems:
    raise ConversionError(src, problems)
  return mapping.SubsetSource(ckpt, [n for n in ckpt.keys() if n not in names])


def _without_position_ids(ckpt, src):
  return position_ids_set_aside(ckpt, src, (_POSITION_IDS,))


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
