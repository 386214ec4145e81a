"""transformers CLIPModel folder (e.g. openai/clip-vit-large-patch14: config.json +
model.safetensors) -> Flax CLIPModel (both towers, models/encoders/clip_model.py).

The vision tower's Rules are conversion/clip_vision.py's under params/vision_model; the text tower's
are its embeddings, the same encoder-layer Rules, final_layer_norm and text_projection under
params/text_model. logit_scale is kept as params/logit_scale. Checkpoints written by older
transformers also hold the two position_ids buffers: each is checked to be 0..N-1 and set aside.
"""
from conversion import clip_vision, driver, mapping
from conversion.mapping import Rule
from sem_repa_jax.models.registry import factory_of

KIND = "clip"
HELP = "transformers CLIPModel folder (config.json + safetensors) -> Flax CLIP, both towers"
FACTORY = factory_of(KIND)

_POSITION_IDS = ("vision_model.embeddings.position_ids", "text_model.embeddings.position_ids")


def text_rules(cfg, target: str = "params") -> list:
  """The text tower's Rules (CLIPTextModelWithProjection names), its Flax parameters under
  `target`."""
  return [
      Rule(r"text_model\.embeddings\.token_embedding\.weight",
           target + "/token_embedding/embedding"),
      Rule(r"text_model\.embeddings\.position_embedding\.weight", target + "/position_embedding"),
      *clip_vision.layer_rules(cfg, r"text_model\.encoder\.layers\.(\d+)", target + "/layers"),
      Rule(r"text_model\.final_layer_norm\.weight", target + "/final_layer_norm/scale"),
      Rule(r"text_model\.final_layer_norm\.bias", target + "/final_layer_norm/bias"),
      Rule(r"text_projection\.weight", target + "/text_projection/kernel", mapping.linear),
  ]


def rules(cfg) -> list:
  return [*clip_vision.rules(cfg.vision, target="params/vision_model"),
          *text_rules(cfg.text, target="params/text_model"),
          Rule(r"logit_scale", "params/logit_scale")]


def _without_position_ids(ckpt, src):
  return clip_vision.position_ids_set_aside(ckpt, src, _POSITION_IDS)


def target_shapes(module) -> dict:
  import jax.numpy as jnp
  v, t = module.config.vision, module.config.text
  pixels = jnp.zeros((1, v.image_size, v.image_size, v.num_channels), jnp.float32)
  return mapping.abstract_shapes(module.init, pixels, jnp.zeros((1, t.max_position_embeddings),
                                                                jnp.int32))


def convert(src: str, dst: str, dtype: str = "float32", variant=None) -> str:
  from sem_repa_jax.models.encoders import clip_model
  read = driver.folder(clip_model.config_from_transformers, view=_without_position_ids,
                       model_types=("clip",),
                       expected="a CLIPModel folder such as openai/clip-vit-large-patch14")
  return driver.convert(src, dst, dtype, kind=KIND, read=read, rules=rules,
                        target_shapes=target_shapes, variant=variant)
