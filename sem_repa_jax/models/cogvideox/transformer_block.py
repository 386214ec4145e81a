"""The CogVideoX expert-transformer block: joint text+video attention with per-stream adaLN.

Text and video tokens travel as ONE sequence (text first) through the whole stack, so a block does
no concatenation or splitting: the per-stream modulation (shift/scale/gate of the text stream for
the first `text_length` tokens, of the video stream for the rest) is a broadcasted select that XLA
fuses into the elementwise ops, and RoPE tables carry cos=1, sin=0 on text rows, which leaves them
exactly unchanged.
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from sem_repa_jax.nn.attention_layers import Attention
from sem_repa_jax.nn.dense import dense
from sem_repa_jax.nn.norms import LayerNorm


def per_stream(is_text, text_value, video_value):
  """(B, D) text and video values -> broadcast per token over (B, S, D) (fused select)."""
  return jnp.where(is_text, text_value[:, None, :], video_value[:, None, :])


class LayerNormZero(nn.Module):
  """CogVideoXLayerNormZero: one LayerNorm, six modulation vectors from temb (three per stream)."""
  dim: int
  eps: float
  affine: bool
  dtype: Any
  param_dtype: Any

  @nn.compact
  def __call__(self, x, temb, is_text):
    mod = dense(6 * self.dim, (None, "embed"), "linear", self.dtype, self.param_dtype)(nn.silu(temb))
    shift, scale, gate, enc_shift, enc_scale, enc_gate = jnp.split(mod, 6, axis=-1)
    h = LayerNorm(self.eps, self.affine, "embed", jnp.float32, self.param_dtype, name="norm")(x)
    h = h * (1 + per_stream(is_text, enc_scale, scale)) + per_stream(is_text, enc_shift, shift)
    return h.astype(self.dtype), per_stream(is_text, enc_gate, gate)


class FeedForward(nn.Module):
  inner_dim: int
  dtype: Any
  param_dtype: Any

  @nn.compact
  def __call__(self, h):
    y = dense(self.inner_dim, ("embed", "mlp"), "proj_in", self.dtype, self.param_dtype)(h)
    y = nn.gelu(y, approximate=True)   # diffusers "gelu-approximate" = torch GELU(tanh)
    y = nn.with_logical_constraint(y, ("batch", "length", "mlp"))
    return dense(h.shape[-1], ("mlp", "embed"), "proj_out", self.dtype, self.param_dtype)(y)


class CogVideoXBlock(nn.Module):
  """One block; call signature fits nn.scan: (x, (temb, rope)) -> (x, None)."""
  heads: int
  head_dim: int
  text_length: int
  norm_eps: float = 1e-5
  norm_affine: bool = True
  attention_bias: bool = True
  attention: str = "xla"
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, cond):
    temb, rope = cond
    dim = self.heads * self.head_dim
    is_text = (jnp.arange(x.shape[1]) < self.text_length)[None, :, None]
    x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
    zero = lambda name: LayerNormZero(dim, self.norm_eps, self.norm_affine, self.dtype,
                                      self.param_dtype, name=name)
    h, gate = zero("norm1")(x, temb, is_text)
    # Self-attention over the joint sequence: per-head LayerNorm on q and k, RoPE on the video rows.
    attn = Attention(self.heads, self.head_dim, qkv_bias=self.attention_bias, qk_norm=True,
                     implementation=self.attention, dtype=self.dtype,
                     param_dtype=self.param_dtype, name="attn1")(h, rope=rope)
    x = (x + gate * attn).astype(self.dtype)
    h, gate = zero("norm2")(x, temb, is_text)
    ff = FeedForward(4 * dim, self.dtype, self.param_dtype, name="ff")(h)
    x = (x + gate * ff).astype(self.dtype)
    return nn.with_logical_constraint(x, ("batch", "length", "embed")), None
