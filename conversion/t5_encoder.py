"""transformers T5EncoderModel folder (e.g. CogVideoX's text_encoder/) -> Flax T5Encoder variables.

The token embedding is tied: checkpoints hold `shared.weight`, `encoder.embed_tokens.weight` or both
(then they must be equal). A full T5 (encoder-decoder) folder also converts: its decoder.* and
lm_head.* tensors are set aside, as T5EncoderModel.from_pretrained does.
"""
import numpy as np

from conversion import driver, mapping
from conversion.mapping import ConversionError, Rule
from sem_repa_jax.models.registry import factory_of

KIND = "t5-encoder"
HELP = "transformers T5EncoderModel folder (config.json + safetensors) -> Flax T5Encoder"
FACTORY = factory_of(KIND)

_IGNORED_PREFIXES = ("decoder.", "lm_head.")


def rules(cfg) -> list:
  h, d = cfg.num_heads, cfg.d_kv
  to_heads = lambda w: mapping.split_axis(w.T, -1, (h, d))     # Linear (H*D, E) -> (E, H, D)
  from_heads = lambda w: mapping.split_axis(w.T, 0, (h, d))   # Linear (E, H*D) -> (H, D, E)
  layer = r"encoder\.block\.(\d+)\.layer"
  ff = "wi_0|wi_1|wo" if cfg.is_gated_act else "wi|wo"
  return [
      Rule(r"(?:shared|encoder\.embed_tokens)\.weight", "params/shared/embedding"),
      Rule(r"encoder\.block\.0\.layer\.0\.SelfAttention\.relative_attention_bias\.weight",
           "params/relative_attention_bias"),
      Rule(layer + r"\.0\.SelfAttention\.(q|k|v)\.weight", r"params/layers/\2/kernel", to_heads,
           stack=1),
      Rule(layer + r"\.0\.SelfAttention\.o\.weight", "params/layers/o/kernel", from_heads, stack=1),
      Rule(layer + r"\.0\.layer_norm\.weight", "params/layers/attn_norm/scale", stack=1),
      Rule(layer + rf"\.1\.DenseReluDense\.({ff})\.weight", r"params/layers/\2/kernel",
           mapping.linear, stack=1),
      Rule(layer + r"\.1\.layer_norm\.weight", "params/layers/ff_norm/scale", stack=1),
      Rule(r"encoder\.final_layer_norm\.weight", "params/final_layer_norm/scale"),
  ]


def _encoder_view(ckpt, src):
  """The checkpoint as T5EncoderModel sees it: one embedding, no decoder."""
  names = [n for n in ckpt.keys() if not n.startswith(_IGNORED_PREFIXES)]
  tied = [n for n in ("shared.weight", "encoder.embed_tokens.weight") if n in names]
  if len(tied) == 2:
    a, b = ckpt.get(tied[0]), ckpt.get(tied[1])
    if a.shape != b.shape or not np.array_equal(a, b):
      raise ConversionError(src, [
          "shared.weight and encoder.embed_tokens.weight differ; T5EncoderModel ties them, "
          "so a checkpoint that holds both must hold the same table"])
    names.remove("encoder.embed_tokens.weight")
  return mapping.SubsetSource(ckpt, names)


def target_shapes(module) -> dict:
  import jax.numpy as jnp
  return mapping.abstract_shapes(module.init, jnp.zeros((1, 2), jnp.int32))


def convert(src: str, dst: str, dtype: str = "float32", variant=None) -> str:
  from sem_repa_jax.models.encoders import t5
  read = driver.folder(t5.config_from_transformers, view=_encoder_view, model_types=("t5", "mt5"),
                       expected="a T5EncoderModel folder such as CogVideoX's text_encoder/")
  return driver.convert(src, dst, dtype, kind=KIND, read=read, rules=rules,
                        target_shapes=target_shapes, variant=variant)
