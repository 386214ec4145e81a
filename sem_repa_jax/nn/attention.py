"""One attention function for every model, with the kernel chosen by config.

Layout is (batch, length, heads, head_dim) for q, k and v, as in jax.nn.dot_product_attention.
'xla' is the reference used by the tests: logits and softmax in float32 whatever the input dtype.
'cudnn' is the fused flash kernel on NVIDIA GPUs (bf16/fp16 only). 'auto' takes cudnn when the
backend and shapes allow it and xla otherwise.
"""
from typing import Optional

import jax
import jax.numpy as jnp

IMPLEMENTATIONS = ("xla", "cudnn", "auto")


def _cudnn_unsupported_reason(q, k, v, mask, bias) -> Optional[str]:
  if jax.default_backend() != "gpu":
    return f"the default backend is {jax.default_backend()!r}, cudnn attention needs an NVIDIA GPU"
  if q.dtype not in (jnp.bfloat16, jnp.float16) or k.dtype != q.dtype or v.dtype != q.dtype:
    return f"cudnn attention takes bfloat16/float16 q, k, v; got {q.dtype}, {k.dtype}, {v.dtype}"
  head_dim = q.shape[-1]
  if head_dim % 8 or head_dim > 256:
    return f"cudnn attention needs head_dim a multiple of 8 and <= 256; got {head_dim}"
  if mask is not None and bias is not None:
    return "cudnn attention takes a mask or a bias, not both"
  return None


def xla_attention(q, k, v, *, mask=None, bias=None, scale=None):
  """Plain softmax attention; logits and softmax in float32."""
  scale = q.shape[-1] ** -0.5 if scale is None else scale
  # Heads-major operands make both products plain batched matmuls (faster on CPU, same on GPU).
  q, k, v = (x.transpose(0, 2, 1, 3) for x in (q, k, v))
  logits = jnp.einsum("bhqd,bhkd->bhqk", q, k, preferred_element_type=jnp.float32) * scale
  if bias is not None:
    logits = logits + bias.astype(jnp.float32)
  if mask is not None:
    logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
  weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
  out = jnp.einsum("bhqk,bhkd->bhqd", weights, v, preferred_element_type=jnp.float32)
  return out.transpose(0, 2, 1, 3).astype(q.dtype)


def dot_product_attention(q, k, v, *, implementation: str = "xla", mask=None, bias=None,
                          scale: Optional[float] = None):
  """Attention over (B, L, N, D) arrays.

  mask: boolean, broadcastable to (B, N, Lq, Lk), True where attention is allowed.
  bias: added to the logits, broadcastable to (B, N, Lq, Lk).
  """
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f"attention implementation {implementation!r} is not one of {IMPLEMENTATIONS}")
  if implementation == "auto":
    implementation = "cudnn" if _cudnn_unsupported_reason(q, k, v, mask, bias) is None else "xla"
  if implementation == "xla":
    return xla_attention(q, k, v, mask=mask, bias=bias, scale=scale)
  reason = _cudnn_unsupported_reason(q, k, v, mask, bias)
  if reason is not None:
    raise ValueError(f"attention implementation 'cudnn' cannot run here: {reason}. "
                     "Use attention='xla' or 'auto'.")
  return jax.nn.dot_product_attention(q, k, v, bias=bias, mask=mask, scale=scale,
                                      implementation="cudnn")
