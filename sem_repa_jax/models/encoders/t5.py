"""T5 v1.1 encoder (the text encoder of CogVideoX), numerically matching transformers' T5EncoderModel.

T5 differs from a textbook transformer in ways that all change numbers:
- attention logits are not scaled by 1/sqrt(d_kv) (the scale is folded into the initialization);
- positions enter only as a learned per-head bias over log-spaced relative-distance buckets, computed
  by the first layer and shared by all layers;
- norms are RMS norms (no mean, no bias) computed in float32;
- v1.1's feed-forward is gated: act(x W_0) * (x W_1), with "gated-gelu" meaning transformers'
  gelu_new, the tanh approximation.
CogVideoX runs the encoder WITHOUT an attention mask on 226 right-padded tokens, so `mask` is optional
and off by default.
"""
import math
from dataclasses import dataclass
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sem_repa_jax.models.encoders.activations import get_activation
from sem_repa_jax.nn.attention import dot_product_attention
from sem_repa_jax.models.config_fields import from_fields
from sem_repa_jax.nn.dense import Projection
from sem_repa_jax.nn.partitioning import as_dtype, partitioned
from sem_repa_jax.nn.stacking import scanned


@dataclass(frozen=True)
class T5Config:
  vocab_size: int = 32128
  d_model: int = 4096
  d_kv: int = 64
  d_ff: int = 10240
  num_layers: int = 24
  num_heads: int = 64
  relative_attention_num_buckets: int = 32
  relative_attention_max_distance: int = 128
  layer_norm_epsilon: float = 1e-6
  dense_act_fn: str = "gelu_new"
  is_gated_act: bool = True


# google/t5-v1_1-xxl's encoder, as shipped in CogVideoX's text_encoder/ folder.
T5_V1_1_XXL = T5Config()
PRESETS = {"t5-v1_1-xxl": T5_V1_1_XXL}


def config_from_transformers(cfg: dict) -> T5Config:
  """T5Config from a transformers T5 config.json dict, resolving feed_forward_proj as T5Config does."""
  proj = cfg.get("feed_forward_proj", "relu")
  parts = proj.split("-")
  if len(parts) > 2 or (len(parts) == 2 and parts[0] != "gated"):
    raise ValueError(f"feed_forward_proj {proj!r}: expected 'ACT' or 'gated-ACT'")
  act = "gelu_new" if proj == "gated-gelu" else parts[-1]
  get_activation(act)   # fail on an unknown activation now, not at the first call
  try:
    return T5Config(
        vocab_size=int(cfg["vocab_size"]), d_model=int(cfg["d_model"]), d_kv=int(cfg["d_kv"]),
        d_ff=int(cfg["d_ff"]), num_layers=int(cfg["num_layers"]), num_heads=int(cfg["num_heads"]),
        relative_attention_num_buckets=int(cfg.get("relative_attention_num_buckets", 32)),
        relative_attention_max_distance=int(cfg.get("relative_attention_max_distance", 128)),
        layer_norm_epsilon=float(cfg.get("layer_norm_epsilon", 1e-6)),
        dense_act_fn=act, is_gated_act=len(parts) == 2)
  except KeyError as e:
    raise ValueError(f"T5 config has no {e.args[0]!r} entry (is it a transformers T5 "
                     "config.json?)") from None


def relative_position_buckets(query_length: int, key_length: int, num_buckets: int,
                              max_distance: int, bidirectional: bool = True) -> np.ndarray:
  """(Lq, Lk) int32 bucket of memory_position - query_position, as T5Attention._relative_position_bucket.

  Computed in numpy at trace time (the shapes are static), with the log in float32 as torch does it,
  so bucket edges land exactly where the reference puts them.
  """
  rel = np.arange(key_length)[None, :] - np.arange(query_length)[:, None]
  buckets = np.zeros_like(rel)
  if bidirectional:
    num_buckets //= 2
    buckets += (rel > 0).astype(rel.dtype) * num_buckets
    rel = np.abs(rel)
  else:
    rel = -np.minimum(rel, 0)
  max_exact = num_buckets // 2
  with np.errstate(divide="ignore", invalid="ignore"):
    large = max_exact + (np.log(rel.astype(np.float32) / np.float32(max_exact))
                         / np.float32(math.log(max_distance / max_exact))
                         * np.float32(num_buckets - max_exact))
  large = np.where(rel < max_exact, 0, large).astype(np.int64)   # log(0) never reaches the cast
  large = np.minimum(large, num_buckets - 1)
  return (buckets + np.where(rel < max_exact, rel, large)).astype(np.int32)


class T5RMSNorm(nn.Module):
  """x / sqrt(mean(x^2) + eps) * weight, statistics in float32; no mean subtraction, no bias."""
  eps: float
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    scale = self.param("scale", partitioned(nn.initializers.ones, ("embed",)), (x.shape[-1],),
                       self.param_dtype)
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
    return scale.astype(self.dtype) * y.astype(self.dtype)


def residual_dtype(dtype):
  """transformers keeps T5's `wo` in float32 when a model is loaded in float16, which turns the
  residual stream float32 from the first feed-forward on (that is what keeps T5 finite in fp16).
  We carry it in float32 from the start under float16; bfloat16 and float32 carry their own dtype."""
  return jnp.float32 if jnp.dtype(dtype) == jnp.float16 else dtype


class T5Block(nn.Module):
  """Pre-norm self-attention with the shared position bias, then the (gated) feed-forward."""
  config: T5Config
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  attention: str = "xla"

  @nn.compact
  def __call__(self, x, bias):
    c = self.config

    def proj(name, features, contract, axes, std):
      return Projection(features, axes, contract, kernel_init=nn.initializers.normal(std),
                        dtype=self.dtype, param_dtype=self.param_dtype, name=name)

    h = T5RMSNorm(c.layer_norm_epsilon, self.dtype, self.param_dtype, name="attn_norm")(x)
    heads = (c.num_heads, c.d_kv)
    q = proj("q", heads, 1, ("embed", "heads", "kv"), (c.d_model * c.d_kv) ** -0.5)(h)
    k = proj("k", heads, 1, ("embed", "heads", "kv"), c.d_model ** -0.5)(h)
    v = proj("v", heads, 1, ("embed", "heads", "kv"), c.d_model ** -0.5)(h)
    a = dot_product_attention(q, k, v, implementation=self.attention, bias=bias, scale=1.0)
    a = proj("o", (c.d_model,), 2, ("heads", "kv", "embed"),
             (c.num_heads * c.d_kv) ** -0.5)(a)
    x = x + a.astype(x.dtype)
    x = nn.with_logical_constraint(x, ("batch", "length", "embed"))

    h = T5RMSNorm(c.layer_norm_epsilon, self.dtype, self.param_dtype, name="ff_norm")(x)
    act = get_activation(c.dense_act_fn)
    if c.is_gated_act:
      f = act(proj("wi_0", (c.d_ff,), 1, ("embed", "mlp"), c.d_model ** -0.5)(h))
      f = f * proj("wi_1", (c.d_ff,), 1, ("embed", "mlp"), c.d_model ** -0.5)(h)
    else:
      f = act(proj("wi", (c.d_ff,), 1, ("embed", "mlp"), c.d_model ** -0.5)(h))
    f = nn.with_logical_constraint(f, ("batch", "length", "mlp"))
    f = Projection((c.d_model,), ("mlp", "embed"), kernel_init=nn.initializers.normal(c.d_ff ** -0.5),
                   dtype=residual_dtype(self.dtype), param_dtype=self.param_dtype, name="wo")(f)
    x = x + f.astype(x.dtype)
    return nn.with_logical_constraint(x, ("batch", "length", "embed")), None


class T5Encoder(nn.Module):
  """`apply(v, input_ids (B, L), mask=None) -> (B, L, d_model)`.

  mask: optional (B, L), nonzero/True for real tokens; keys where it is False get no attention
  (transformers' attention_mask). CogVideoX passes none.
  """
  config: T5Config
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  attention: str = "xla"
  remat_policy: str = "none"

  @nn.compact
  def __call__(self, input_ids, mask: Optional[jax.Array] = None):
    c = self.config
    if input_ids.ndim != 2:
      raise ValueError(f"input_ids: expected (batch, length) token ids, got shape {input_ids.shape}")
    length = input_ids.shape[1]
    # The table is looked up, never multiplied: a vocab-sharded gather would make XLA replicate it,
    # so only the embed axis carries a name.
    x = nn.Embed(c.vocab_size, c.d_model, dtype=self.dtype, param_dtype=self.param_dtype,
                 embedding_init=partitioned(nn.initializers.normal(1.0), (None, "embed")),
                 name="shared")(input_ids).astype(residual_dtype(self.dtype))
    x = nn.with_logical_constraint(x, ("batch", "length", "embed"))

    table = self.param("relative_attention_bias",
                       partitioned(nn.initializers.normal(c.d_model ** -0.5), (None, "heads")),
                       (c.relative_attention_num_buckets, c.num_heads), self.param_dtype)
    buckets = relative_position_buckets(length, length, c.relative_attention_num_buckets,
                                        c.relative_attention_max_distance)
    bias = jnp.transpose(table.astype(self.dtype)[buckets], (2, 0, 1))[None]   # (1, H, L, L)
    if mask is not None:
      if mask.shape != input_ids.shape:
        raise ValueError(f"mask: expected shape {input_ids.shape} like input_ids, got {mask.shape}")
      keep = mask.astype(bool)[:, None, None, :]
      bias = jnp.where(keep, bias, jnp.finfo(bias.dtype).min)

    stack = scanned(T5Block, c.num_layers, self.remat_policy, broadcast_args=1)
    x, _ = stack(c, self.dtype, self.param_dtype, self.attention, name="layers")(x, bias)
    x = T5RMSNorm(c.layer_norm_epsilon, self.dtype, self.param_dtype, name="final_layer_norm")(x)
    return x.astype(self.dtype)


def build_t5_encoder(config: dict, dtype: str = "float32", param_dtype: str = "float32",
                     attention: str = "xla", remat_policy: str = "none") -> T5Encoder:
  """Factory from JSON-able arguments (used by load_pretrained on converted folders)."""
  return T5Encoder(from_fields(T5Config, config, "T5"), dtype=as_dtype(dtype), param_dtype=as_dtype(param_dtype),
                   attention=attention, remat_policy=remat_policy)
