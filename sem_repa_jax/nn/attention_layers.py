"""Attention layers with diffusers' names (to_q, to_k, to_v, to_out) over the attention dispatch.

One module covers the self- and cross-attention of every backbone, with the hooks the methods need
built in (design.md: no processor swapping at run time):
- extra context groups (decoupled cross-attention, IP-Adapter and StableAnimator's ID adapter):
  group g has its own to_k_g / to_v_g; the layer's queries attend to each group separately and
  the outputs are added, attn(q, k, v) + sum_g scale_g * attn(q, k_g, v_g), before to_out; with
  extra_alignment 'distribution' each group's output is first given the mean and standard
  deviation of the main output (`align_distribution`, StableAnimator's distribution-aware adapter);
  with extra_zero_init each to_v_g starts at zero, so a new group adds exactly 0 (VividPose's ID
  branch: the layer equals the one without the group until training moves to_v_g);
- reference tokens (VividPose's ReferenceNet): hidden states joined to the key/value input and
  projected by this layer's own to_k / to_v, so the spatial self-attention also sees the reference;
- injected k/v: keys and values already projected, (B, L', heads, head_dim), concatenated to the
  layer's own.
Kernels are (D, heads, head_dim) for q/k/v and (heads, head_dim, D) for to_out, as the converters
write them; q and k may be LayerNormed per head (CogVideoX) and rotated by RoPE tables.
"""
from typing import Any, Mapping, Optional, Sequence, Tuple, Union

import flax.linen as nn
import jax.numpy as jnp

from sem_repa_jax.nn.attention import dot_product_attention
from sem_repa_jax.nn.dense import dense
from sem_repa_jax.nn.embeddings import apply_rotary_emb
from sem_repa_jax.nn.norms import LayerNorm

HEAD_AXES = ("batch", "length", "heads", "kv")
EXTRA_ALIGNMENTS = ("none", "distribution")


def _unbiased_std(x, axes):
  """Unbiased std whose gradient is 0 where it is 0, as torch's (jnp.std's is NaN there: the
  main output of a dropped CLIP token is exactly zero in 20 % of StableAnimator's training rows)."""
  var = jnp.var(x, axes, keepdims=True, ddof=1)
  positive = var > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, var, 1.0)), 0.0)


def align_distribution(o_extra, o_main, eps: float = 1e-5):
  """StableAnimator's alignment of an extra group's attention output (B, L, heads, head_dim) to the
  main one: per batch row over all tokens and channels jointly, unbiased standard deviations,
  (o_extra - mean_e) * std_main / (std_e + eps) + mean_main. Statistics in float32.

  With a zero main output (one zero CLIP key: softmax 1, bias-free to_v) the result is exactly 0.
  """
  axes = tuple(range(1, o_main.ndim))
  e, m = o_extra.astype(jnp.float32), o_main.astype(jnp.float32)
  mean_e, mean_m = jnp.mean(e, axes, keepdims=True), jnp.mean(m, axes, keepdims=True)
  std_e, std_m = _unbiased_std(e, axes), _unbiased_std(m, axes)
  return ((e - mean_e) * (std_m / (std_e + eps)) + mean_m).astype(o_extra.dtype)


class Attention(nn.Module):
  """`(x (B, L, D), context=None (B, S, D_ctx), *, rope, mask, extra_context, extra_scale,
  reference, injected_kv) -> (B, L, out_features or D)`.

  context None: self-attention. rope: (cos, sin) of the layer's own L (self) rows, applied to q and
  the keys of x / context; reference and injected keys are not rotated. mask: boolean,
  broadcastable to (B, heads, L, keys), over the joined keys, main attention only.
  extra_context: {group: (B, T_g, D_g)} for every name in extra_groups; extra_scale: one float or
  {group: float}. extra_alignment 'distribution': each group's output is `align_distribution`ed
  to the main output before it is scaled and added (per row of the batch: per frame in SVD).
  """
  heads: int
  head_dim: int
  out_features: Optional[int] = None
  qkv_bias: bool = False
  out_bias: bool = True
  qk_norm: bool = False            # LayerNorm over head_dim on q and k (norm_q, norm_k)
  qk_norm_eps: float = 1e-6
  extra_groups: Sequence[str] = ()
  extra_alignment: str = "none"    # one of EXTRA_ALIGNMENTS
  extra_zero_init: bool = False    # to_v_g initialized at zero (the group's output is 0 at init)
  implementation: str = "xla"
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def _proj(self, name, use_bias, kernel_init=None):
    return dense((self.heads, self.head_dim), ("embed", "heads", "kv"), name, self.dtype,
                 self.param_dtype, use_bias, kernel_init=kernel_init)

  def _norm(self, name):
    if not self.qk_norm:
      return lambda t: t
    return LayerNorm(self.qk_norm_eps, True, "kv", self.dtype, self.param_dtype, name=name)

  def _attend(self, q, k, v, mask=None):
    k, v = nn.with_logical_constraint(k, HEAD_AXES), nn.with_logical_constraint(v, HEAD_AXES)
    return dot_product_attention(q, k, v, implementation=self.implementation, mask=mask)

  @nn.compact
  def __call__(self, x, context=None, *, rope: Optional[tuple] = None, mask=None,
               extra_context: Optional[Mapping[str, Any]] = None,
               extra_scale: Union[float, Mapping[str, float]] = 1.0,
               reference=None, injected_kv: Optional[Tuple[Any, Any]] = None):
    if x.ndim != 3:
      raise ValueError(f"Attention takes tokens (B, L, D), got {x.shape}")
    if self.extra_alignment not in EXTRA_ALIGNMENTS:
      raise ValueError(f"Attention: extra_alignment {self.extra_alignment!r}, expected one of "
                       f"{EXTRA_ALIGNMENTS}")
    extra_context = dict(extra_context or {})
    if set(extra_context) != set(self.extra_groups):
      raise ValueError(f"Attention: extra_context has groups {sorted(extra_context)}, this layer "
                       f"has {sorted(self.extra_groups)}")
    to_k, to_v = self._proj("to_k", self.qkv_bias), self._proj("to_v", self.qkv_bias)
    norm_k = self._norm("norm_k")
    q = self._norm("norm_q")(self._proj("to_q", self.qkv_bias)(x))
    kv_in = x if context is None else context
    k, v = norm_k(to_k(kv_in)), to_v(kv_in)
    if rope is not None:
      q, k = apply_rotary_emb(q, rope), apply_rotary_emb(k, rope)
    if reference is not None:
      k = jnp.concatenate([k, norm_k(to_k(reference))], axis=1)
      v = jnp.concatenate([v, to_v(reference)], axis=1)
    if injected_kv is not None:
      k = jnp.concatenate([k, injected_kv[0].astype(k.dtype)], axis=1)
      v = jnp.concatenate([v, injected_kv[1].astype(v.dtype)], axis=1)
    q = nn.with_logical_constraint(q, HEAD_AXES)
    o = main = self._attend(q, k, v, mask)
    for g in self.extra_groups:
      scale = extra_scale[g] if isinstance(extra_scale, Mapping) else extra_scale
      c = extra_context[g]
      v_init = nn.initializers.zeros if self.extra_zero_init else None
      og = self._attend(q, self._proj(f"to_k_{g}", False)(c),
                        self._proj(f"to_v_{g}", False, v_init)(c))
      if self.extra_alignment == "distribution":
        og = align_distribution(og, main)
      o = o + jnp.asarray(scale, o.dtype) * og
    o = nn.with_logical_constraint(o, HEAD_AXES)
    return dense(self.out_features or x.shape[-1], ("heads", "kv", "embed"), "to_out", self.dtype,
                 self.param_dtype, self.out_bias, axis=(-2, -1))(o)
