"""CLIP text transformer with projection, matching transformers' CLIPTextModelWithProjection (and
the text tower of CLIPModel: get_text_features).

Token embedding plus a learned absolute position embedding, pre-norm encoder layers (clip.py's
CLIPEncoderLayer) under a causal mask (and the padding mask when one is given), a final LayerNorm,
the hidden state at each prompt's end-of-text token, and a bias-free projection: text_embeds.

Which position is the end of text follows transformers: configs written before its PR #24773 say
eos_token_id 2 (the openai/clip-vit-* checkpoints do) and take the argmax of the token ids, which
is <|endoftext|> because it is the largest id of the vocabulary; other configs take the first
position holding eos_token_id. Both find the first <|endoftext|> when the tokenizer pads with it
(the openai tokenizers do), as argmax returns the first maximum.
"""
import dataclasses
from dataclasses import dataclass
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from sem_repa_jax.models.config_fields import from_fields
from sem_repa_jax.models.encoders.clip import CLIPEncoderLayer
from sem_repa_jax.nn.norms import LayerNorm
from sem_repa_jax.nn.partitioning import as_dtype, partitioned
from sem_repa_jax.nn.stacking import scanned

# The eos_token_id of configs written before transformers' PR #24773: pool at argmax(input_ids).
LEGACY_EOS_TOKEN_ID = 2


@dataclass(frozen=True)
class CLIPTextConfig:
  """transformers' CLIPTextConfig fields the model reads; the defaults are transformers' own."""
  vocab_size: int = 49408
  hidden_size: int = 512
  intermediate_size: int = 2048
  num_hidden_layers: int = 12
  num_attention_heads: int = 8
  max_position_embeddings: int = 77
  projection_dim: int = 512
  hidden_act: str = "quick_gelu"
  layer_norm_eps: float = 1e-5
  eos_token_id: int = 49407


def config_from_transformers(cfg: dict) -> CLIPTextConfig:
  """From a CLIPTextConfig config.json (or a full CLIPConfig's text_config, whose projection_dim
  is the top-level one, as CLIPModel reads it)."""
  if "text_config" in cfg and "hidden_size" not in cfg:
    cfg = dict(cfg["text_config"], projection_dim=cfg.get("projection_dim", 512))
  defaults = CLIPTextConfig()
  if isinstance(cfg.get("eos_token_id"), (list, tuple)):
    raise ValueError(f"text_config eos_token_id {cfg['eos_token_id']}: expected one token id")
  kwargs = {}
  for f in dataclasses.fields(CLIPTextConfig):
    default = getattr(defaults, f.name)
    value = cfg.get(f.name)
    kwargs[f.name] = default if value is None else type(default)(value)
  if kwargs["hidden_size"] % kwargs["num_attention_heads"]:
    raise ValueError(f"text_config hidden_size {kwargs['hidden_size']} is not a multiple of "
                     f"num_attention_heads {kwargs['num_attention_heads']}")
  return CLIPTextConfig(**kwargs)


def eos_positions(input_ids, eos_token_id: int):
  """(B,) index of each row's end-of-text token, by transformers' rule for this eos_token_id."""
  if eos_token_id == LEGACY_EOS_TOKEN_ID:
    return jnp.argmax(input_ids, axis=-1)
  return jnp.argmax(input_ids == eos_token_id, axis=-1)


def attention_mask_of(length: int, attention_mask: Optional[jax.Array] = None):
  """Boolean (B or 1, 1, L, L): causal, and where `attention_mask` (B, L) is given, no padded
  keys."""
  mask = jnp.tril(jnp.ones((length, length), bool))[None, None]
  if attention_mask is None:
    return mask
  return mask & attention_mask.astype(bool)[:, None, None, :]


class CLIPTextEncoder(nn.Module):
  """`apply(v, input_ids (B, L) int, attention_mask (B, L) or None) -> dict(last_hidden_state,
  pooled, text_embeds)`.

  L <= max_position_embeddings. last_hidden_state (B, L, D) after final_layer_norm; pooled: its row
  at the end-of-text token (transformers' pooler_output); text_embeds (B, projection_dim),
  unnormalized (get_text_features).
  """
  config: CLIPTextConfig
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  attention: str = "xla"
  remat_policy: str = "none"

  @nn.compact
  def __call__(self, input_ids, attention_mask=None):
    c = self.config
    if input_ids.ndim != 2 or input_ids.shape[1] > c.max_position_embeddings:
      raise ValueError(f"input_ids: expected (batch, length <= {c.max_position_embeddings}) "
                       f"token ids, got shape {input_ids.shape}")
    if attention_mask is not None and attention_mask.shape != input_ids.shape:
      raise ValueError(f"attention_mask: expected shape {input_ids.shape} like input_ids, got "
                       f"{attention_mask.shape}")
    b, length = input_ids.shape
    d = c.hidden_size
    # Looked up, never multiplied: only the embed axis carries a name (as T5's table).
    x = nn.Embed(c.vocab_size, d, dtype=self.dtype, param_dtype=self.param_dtype,
                 embedding_init=partitioned(nn.initializers.normal(0.02), (None, "embed")),
                 name="token_embedding")(input_ids)
    pos = self.param("position_embedding", partitioned(nn.initializers.normal(0.01),
                                                        (None, "embed")),
                     (c.max_position_embeddings, d), self.param_dtype)
    x = x + pos[:length].astype(self.dtype)[None]
    x = nn.with_logical_constraint(x, ("batch", "length", "embed"))

    stack = scanned(CLIPEncoderLayer, c.num_hidden_layers, self.remat_policy, broadcast_args=1)
    x, _ = stack(c, self.dtype, self.param_dtype, self.attention, name="layers")(
        x, attention_mask_of(length, attention_mask))
    x = LayerNorm(c.layer_norm_eps, dtype=self.dtype, param_dtype=self.param_dtype,
                  name="final_layer_norm")(x)

    pooled = x[jnp.arange(b), eos_positions(input_ids, c.eos_token_id)]
    text_embeds = nn.Dense(c.projection_dim, use_bias=False, dtype=self.dtype,
                           param_dtype=self.param_dtype, name="text_projection",
                           kernel_init=partitioned(nn.initializers.normal(d ** -0.5),
                                                    ("embed", None)))(pooled)
    return {"last_hidden_state": x, "pooled": pooled, "text_embeds": text_embeds}


def build(config: dict, dtype: str = "float32", param_dtype: str = "float32",
          attention: str = "xla", remat_policy: str = "none") -> CLIPTextEncoder:
  """Factory from JSON-able arguments (the text tower alone)."""
  return CLIPTextEncoder(from_fields(CLIPTextConfig, config, "CLIP text"), dtype=as_dtype(dtype),
                         param_dtype=as_dtype(param_dtype), attention=attention,
                         remat_policy=remat_policy)
