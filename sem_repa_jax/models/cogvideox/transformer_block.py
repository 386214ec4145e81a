"""The CogVideoX expert-transformer block: joint text+video attention with per-stream adaLN.

Text and video tokens travel as ONE sequence (text first) through the whole stack, so a block does
no concatenation or splitting: the per-stream modulation (shift/scale/gate of the text stream for
the first `text_length` tokens, of the video stream for the rest) is a broadcasted select that XLA
fuses into the elementwise ops, and RoPE tables carry cos=1, sin=0 on text rows, which leaves them
exactly unchanged.
"""
from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from sem_repa_jax.nn.attention import dot_product_attention
from sem_repa_jax.nn.dense import Projection
from sem_repa_jax.nn.embeddings import apply_rotary_emb

def dense(features, axes, name, dtype, param_dtype, use_bias=True, axis=-1):
  """A dense layer contracting the trailing `axis` (int or tuple of negative axes) with logical
  axis names on the kernel (axes) and bias (its output part); lecun-normal initialization."""
  features = (features,) if isinstance(features, int) else tuple(features)
  n_in = 1 if isinstance(axis, int) else len(axis)
  init = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal",
                                          in_axis=tuple(range(n_in)),
                                          out_axis=tuple(range(n_in, n_in + len(features))))
  return Projection(features, tuple(axes), n_in, tuple(axes)[n_in:] if use_bias else None,
                    kernel_init=init, dtype=dtype, param_dtype=param_dtype, name=name)


def layer_norm(x, epsilon, affine, axis_name, param_dtype, name, dtype):
  """LayerNorm computed in float32 (two-pass variance, like torch), output in `dtype`."""
  y = nn.LayerNorm(
      epsilon=epsilon, use_scale=affine, use_bias=affine, dtype=jnp.float32,
      param_dtype=param_dtype, use_fast_variance=False, name=name,
      scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), (axis_name,)),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), (axis_name,)),
  )(x.astype(jnp.float32))
  return y.astype(dtype)


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
    h = layer_norm(x, self.eps, self.affine, "embed", self.param_dtype, "norm", jnp.float32)
    h = h * (1 + per_stream(is_text, enc_scale, scale)) + per_stream(is_text, enc_shift, shift)
    return h.astype(self.dtype), per_stream(is_text, enc_gate, gate)


class Attention(nn.Module):
  """Self-attention over the joint sequence: biased q/k/v, per-head LayerNorm on q and k,
  RoPE on the video rows (if given), softmax scale 1/sqrt(head_dim)."""
  heads: int
  head_dim: int
  use_bias: bool
  implementation: str
  dtype: Any
  param_dtype: Any

  @nn.compact
  def __call__(self, h, rope: Optional[tuple]):
    hd = (self.heads, self.head_dim)
    proj = lambda name: dense(hd, ("embed", "heads", "kv"), name, self.dtype, self.param_dtype,
                              self.use_bias)(h)
    q, k, v = proj("to_q"), proj("to_k"), proj("to_v")
    q = layer_norm(q, 1e-6, True, "kv", self.param_dtype, "norm_q", self.dtype)
    k = layer_norm(k, 1e-6, True, "kv", self.param_dtype, "norm_k", self.dtype)
    if rope is not None:
      q, k = apply_rotary_emb(q, rope), apply_rotary_emb(k, rope)
    axes = ("batch", "length", "heads", "kv")
    q, k, v = (nn.with_logical_constraint(a, axes) for a in (q, k, v))
    o = dot_product_attention(q, k, v, implementation=self.implementation)
    o = nn.with_logical_constraint(o, axes)
    return dense(h.shape[-1], ("heads", "kv", "embed"), "to_out", self.dtype, self.param_dtype,
                 axis=(-2, -1))(o)


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
    attn = Attention(self.heads, self.head_dim, self.attention_bias, self.attention, self.dtype,
                     self.param_dtype, name="attn1")(h, rope)
    x = (x + gate * attn).astype(self.dtype)
    h, gate = zero("norm2")(x, temb, is_text)
    ff = FeedForward(4 * dim, self.dtype, self.param_dtype, name="ff")(h)
    x = (x + gate * ff).astype(self.dtype)
    return nn.with_logical_constraint(x, ("batch", "length", "embed")), None
