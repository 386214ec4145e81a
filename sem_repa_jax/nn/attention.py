"""One attention function for every model, with the kernel chosen by config from a registry.

Layout is (batch, length, heads, head_dim) for q, k and v, as in jax.nn.dot_product_attention.
Kernels (each a `Kernel`: a function and a `supports(q, k, v, mask, bias)` predicate):
  'xla'        the reference used by the tests: logits and softmax in float32 whatever the dtype.
  'blockwise'  online softmax over key blocks, no full score matrix (nn/blockwise_attention.py);
               any backend, any length, mask and bias, a flash-style custom VJP.
  'cudnn'      the fused flash kernel on NVIDIA GPUs (bf16/fp16 only).
  'splash'     Pallas' splash kernel on TPU, lengths padded to blocks (nn/splash_attention.py).
  'auto'       `choose`: cudnn on NVIDIA when it supports the call, splash on TPU when it does,
               blockwise on CPU once Lq * Lk reaches CPU_BLOCKWISE_MIN_SCORES, xla otherwise.
`register` adds a kernel; an unknown name is an error that lists the registered ones.
"""
import dataclasses
from typing import Callable, Dict, Optional

import jax
import jax.numpy as jnp

from sem_repa_jax.nn import splash_attention as splash_lib
from sem_repa_jax.nn.blockwise_attention import blockwise_attention

# From Lq * Lk = 1024 * 1024 on, blockwise beat xla on 2 CPU cores (0.68x at 1,024 tokens, 0.25x
# at 2,048, even at 512; 8x64 heads, float32; docs/attention.md).
CPU_BLOCKWISE_MIN_SCORES = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class Kernel:
  """An attention kernel: fn(q, k, v, *, mask, bias, scale) and why it cannot take a call.

  unsupported(q, k, v, mask, bias) returns None when the kernel can run that call here, else a
  sentence saying why not.
  """
  name: str
  fn: Callable
  unsupported: Callable = lambda q, k, v, mask, bias: None

  def supports(self, q, k, v, mask=None, bias=None) -> bool:
    return self.unsupported(q, k, v, mask, bias) is None


_KERNELS: Dict[str, Kernel] = {}


def register(kernel: Kernel) -> Kernel:
  if kernel.name == "auto":
    raise ValueError("attention kernel name 'auto' is reserved for the policy in `choose`")
  _KERNELS[kernel.name] = kernel
  return kernel


def kernel(name: str) -> Kernel:
  if name not in _KERNELS:
    raise ValueError(f"attention implementation {name!r} is not one of {IMPLEMENTATIONS}")
  return _KERNELS[name]


class _Names:
  """The registered kernel names and 'auto', read live (models check config names against it)."""

  def _names(self):
    return tuple(_KERNELS) + ("auto",)

  def __contains__(self, name):
    return name in self._names()

  def __iter__(self):
    return iter(self._names())

  def __len__(self):
    return len(self._names())

  def __repr__(self):
    return repr(self._names())


IMPLEMENTATIONS = _Names()


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


def _cudnn_attention(q, k, v, *, mask=None, bias=None, scale=None):
  return jax.nn.dot_product_attention(q, k, v, bias=bias, mask=mask, scale=scale,
                                      implementation="cudnn")


def _splash(q, k, v, *, mask=None, bias=None, scale=None):
  return splash_lib.splash_attention(q, k, v, mask=mask, bias=bias, scale=scale)


register(Kernel("xla", xla_attention))
register(Kernel("blockwise", blockwise_attention))
register(Kernel("cudnn", _cudnn_attention, _cudnn_unsupported_reason))
register(Kernel("splash", _splash, splash_lib.unsupported_reason))


def choose(q, k, v, mask=None, bias=None) -> str:
  """The kernel 'auto' runs for this call on this backend."""
  backend = jax.default_backend()
  if backend == "gpu" and kernel("cudnn").supports(q, k, v, mask, bias):
    return "cudnn"
  if backend == "tpu" and kernel("splash").supports(q, k, v, mask, bias):
    return "splash"
  if backend == "cpu" and q.shape[1] * k.shape[1] >= CPU_BLOCKWISE_MIN_SCORES:
    return "blockwise"
  return "xla"


def dot_product_attention(q, k, v, *, implementation: str = "xla", mask=None, bias=None,
                          scale: Optional[float] = None):
  """Attention over (B, L, N, D) arrays.

  mask: boolean, broadcastable to (B, N, Lq, Lk), True where attention is allowed.
  bias: added to the logits, broadcastable to (B, N, Lq, Lk).
  """
  if implementation == "auto":
    implementation = choose(q, k, v, mask, bias)
  chosen = kernel(implementation)
  reason = chosen.unsupported(q, k, v, mask, bias)
  if reason is not None:
    raise ValueError(f"attention implementation {implementation!r} cannot run here: {reason}. "
                     "Use attention='xla' or 'auto'.")
  return chosen.fn(q, k, v, mask=mask, bias=bias, scale=scale)
