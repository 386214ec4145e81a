"""StableAnimator's face encoder: `FusionFaceId`, an ArcFace embedding refined by the CLIP image
embedding into the face tokens of the U-Net's ID adapter.

    x = LayerNorm(reshape(Linear(GELU(Linear(id_embed))), tokens x D))      (B, 4, D) face tokens
    FacePerceiver (the face tokens are the latents, the CLIP embedding the context):
      c = proj_in(clip)                                                      (B, 1, D)
      depth x: x = PerceiverAttention(c, x) + x;  x = FeedForward(x) + x
      out = norm_out(proj_out(x))

PerceiverAttention: q = to_q(norm2(x)); k, v = halves of to_kv(concat[norm1(c), norm2(x)]);
heads = D // 64 of 64; q and k each scaled by 64**-0.25 (as the official, which keeps the logits
small in half precision), logits and softmax in float32; to_out. Every Linear of the perceiver is
bias-free except proj_in and proj_out; GELUs are exact; LayerNorms eps 1e-5. proj_out is zero-
initialized: a new encoder gives norm_out's bias for every token.
"""
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from sem_repa_jax.models.config_fields import from_fields
from sem_repa_jax.nn.attention import dot_product_attention
from sem_repa_jax.nn.dense import Projection, dense
from sem_repa_jax.nn.norms import LayerNorm
from sem_repa_jax.nn.partitioning import as_dtype

TOKEN_AXES = ("batch", "length", "embed")


@dataclass(frozen=True)
class FaceEncoderConfig:
  """Official: FusionFaceId(cross_attention_dim=1024, id_embeddings_dim=512,
  clip_embeddings_dim=1024, num_tokens=4), perceiver depth 4, heads of 64, ff_mult 4."""
  id_embeddings_dim: int = 512
  proj_hidden_dim: int = 1024      # the official's 2 * id_embeddings_dim
  cross_attention_dim: int = 1024  # D: the U-Net's context width
  clip_embeddings_dim: int = 1024
  num_tokens: int = 4
  depth: int = 4
  dim_head: int = 64
  ff_mult: int = 4

  def __post_init__(self):
    if self.cross_attention_dim % self.dim_head:
      raise ValueError(f"face encoder config: cross_attention_dim {self.cross_attention_dim} is "
                       f"not a multiple of dim_head {self.dim_head} (heads = D // dim_head)")

  @property
  def heads(self) -> int:
    return self.cross_attention_dim // self.dim_head


def _norm(module, name):
  return LayerNorm(1e-5, True, "embed", module.dtype, module.param_dtype, name=name)


class PerceiverAttention(nn.Module):
  """`(context (B, S, D), latents (B, L, D)) -> (B, L, D)`: the latents attend to the normed
  context and themselves."""
  heads: int
  dim_head: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, context, latents):
    d = latents.shape[-1]
    context, latents = _norm(self, "norm1")(context), _norm(self, "norm2")(latents)
    hd = (self.heads, self.dim_head)
    q = dense(hd, ("embed", "heads", "kv"), "to_q", self.dtype, self.param_dtype, False)(latents)
    kv = dense((2,) + hd, ("embed", None, "heads", "kv"), "to_kv", self.dtype, self.param_dtype,
               False)(jnp.concatenate([context, latents], axis=1))
    s = self.dim_head ** -0.25
    o = dot_product_attention(q * s, kv[..., 0, :, :] * s, kv[..., 1, :, :], scale=1.0)
    return dense(d, ("heads", "kv", "embed"), "to_out", self.dtype, self.param_dtype, False,
                 axis=(-2, -1))(o)


class FeedForward(nn.Module):
  """LayerNorm, Linear(D, mult*D), exact GELU, Linear(mult*D, D); bias-free."""
  mult: int = 4
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    d = x.shape[-1]
    h = dense(self.mult * d, ("embed", "mlp"), "linear_1", self.dtype, self.param_dtype,
              False)(_norm(self, "norm")(x))
    return dense(d, ("mlp", "embed"), "linear_2", self.dtype, self.param_dtype,
                 False)(nn.gelu(h, approximate=False))


class FacePerceiver(nn.Module):
  """`(latents (B, L, D) face tokens, clip (B, S, clip_dim)) -> (B, L, D)`."""
  config: FaceEncoderConfig
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, latents, clip):
    c = self.config
    d = c.cross_attention_dim
    x = dense(d, (None, "embed"), "proj_in", self.dtype, self.param_dtype)(clip.astype(self.dtype))
    for i in range(c.depth):
      latents = PerceiverAttention(c.heads, c.dim_head, self.dtype, self.param_dtype,
                                   name=f"layers_{i}_attn")(x, latents) + latents
      latents = FeedForward(c.ff_mult, self.dtype, self.param_dtype,
                            name=f"layers_{i}_ff")(latents) + latents
      latents = nn.with_logical_constraint(latents, TOKEN_AXES)
    latents = Projection((d,), (None, "embed"), bias_axes=("embed",),
                         kernel_init=nn.initializers.zeros, dtype=self.dtype,
                         param_dtype=self.param_dtype, name="proj_out")(latents)
    return _norm(self, "norm_out")(latents)


class FusionFaceId(nn.Module):
  """`(id_embeds (B, id_dim) ArcFace embedding, raw, clip_embeds (B, 1, clip_dim) or
  (B, clip_dim) CLIP image embedding) -> (B, num_tokens, D)` face tokens."""
  config: FaceEncoderConfig = FaceEncoderConfig()
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, id_embeds, clip_embeds):
    c = self.config
    if id_embeds.ndim != 2 or id_embeds.shape[-1] != c.id_embeddings_dim:
      raise ValueError(f"FusionFaceId: id_embeds must be (B, {c.id_embeddings_dim}), got "
                       f"{id_embeds.shape}")
    if clip_embeds.ndim == 2:
      clip_embeds = clip_embeds[:, None]
    if clip_embeds.ndim != 3 or clip_embeds.shape[::2] != (id_embeds.shape[0],
                                                           c.clip_embeddings_dim):
      raise ValueError(f"FusionFaceId: clip_embeds must be ({id_embeds.shape[0]}, S, "
                       f"{c.clip_embeddings_dim}), got {clip_embeds.shape}")
    x = dense(c.proj_hidden_dim, (None, "mlp"), "proj_0", self.dtype,
              self.param_dtype)(id_embeds.astype(self.dtype))
    x = dense((c.num_tokens, c.cross_attention_dim), ("mlp", None, "embed"), "proj_2",
              self.dtype, self.param_dtype)(nn.gelu(x, approximate=False))
    x = _norm(self, "norm")(x)
    return FacePerceiver(c, self.dtype, self.param_dtype, name="fusion_model")(x, clip_embeds)


def build(config: dict, dtype="float32", param_dtype="float32") -> FusionFaceId:
  """Factory of kind 'face-encoder' (load_pretrained): JSON kwargs."""
  if not isinstance(config, FaceEncoderConfig):
    config = from_fields(FaceEncoderConfig, config, "face encoder")
  return FusionFaceId(config, dtype=as_dtype(dtype), param_dtype=as_dtype(param_dtype))
