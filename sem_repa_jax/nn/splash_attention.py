"""TPU attention through Pallas' splash kernel, for any sequence length.

jax.experimental.pallas.ops.tpu.splash_attention works on (heads, length, head_dim) arrays whose
lengths are multiples of its blocks. Here q and k/v are zero-padded to those multiples and the
padded keys are cut off with segment ids (real keys segment 0, padding segment 1, every query
segment 0), so padded query rows still see real keys (no empty softmax) and are sliced away after.
The batch axis is vmapped; the kernel takes no scale, so q is pre-scaled. The kernel's own custom
VJP gives the gradient. `interpret=True` runs the same kernel on CPU (slowly) for the tests.

Block choice (`splash_blocks`): the largest of 512, 256, 128 (TPU lane multiples) whose padded
length is within 1/32 of the least padding a 128 block gives, since larger blocks run faster:
  CogVideoX-5b 13x60x90 latents: 17,550 video + 226 text = 17,776 -> 17,920 (block 512, 0.8%)
  CogVideoX 13x30x44 (the CPU benchmark): 4,290 + 226 = 4,516 -> 4,608 (512);
  SVD 576x1024 spatial levels 9,216 (512), 2,304 (256), 576 -> 640 (128), 144 -> 256 (256);
  temporal attention over 14 or 25 frames -> 128; the 226 text tokens alone -> 256.
"""
import functools
from typing import Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

BLOCKS = (512, 256, 128)
LANE = 128


def _round_up(n: int, m: int) -> int:
  return -(-n // m) * m


def _block(n: int, blocks) -> int:
  least = _round_up(n, LANE)
  for b in sorted(blocks, reverse=True):
    b = min(b, least)   # a block never exceeds the lane-padded sequence
    if _round_up(n, b) * 32 <= least * 33:
      return b
  return LANE


def splash_blocks(lq: int, lk: int, blocks=BLOCKS) -> Tuple[int, int, int, int]:
  """(block_q, block_kv, padded Lq, padded Lk) for sequence lengths lq and lk."""
  if lq < 1 or lk < 1:
    raise ValueError(f"splash attention: sequence lengths must be positive, got {lq}, {lk}")
  bq, bk = _block(lq, blocks), _block(lk, blocks)
  return bq, bk, _round_up(lq, bq), _round_up(lk, bk)


@functools.lru_cache(maxsize=64)
def _kernel(heads: int, lq_pad: int, lk_pad: int, bq: int, bk: int, interpret: bool):
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm
  mask = sm.MultiHeadMask([sm.FullMask((lq_pad, lk_pad)) for _ in range(heads)])
  blocks = sk.BlockSizes(block_q=bq, block_kv=bk, block_kv_compute=bk, block_q_dkv=bq,
                         block_kv_dkv=bk, block_kv_dkv_compute=bk, block_q_dq=bq, block_kv_dq=bk)
  return sk.make_splash_mha(mask, block_sizes=blocks, head_shards=1, q_seq_shards=1,
                            interpret=interpret), sk.SegmentIds


def unsupported_reason(q, k, v, mask=None, bias=None) -> Optional[str]:
  if jax.default_backend() != "tpu":
    return f"the default backend is {jax.default_backend()!r}, splash attention needs a TPU"
  return _shape_reason(q, k, v, mask, bias)


def _shape_reason(q, k, v, mask, bias) -> Optional[str]:
  if mask is not None or bias is not None:
    return "splash attention here takes no mask or bias (padding is handled inside)"
  if k.shape[2] != q.shape[2] or v.shape[2] != q.shape[2]:
    return f"splash attention needs as many k/v heads as q heads; got {q.shape[2]}, {k.shape[2]}"
  if v.shape[-1] != q.shape[-1]:
    return f"splash attention needs v's head_dim equal to q's; got {v.shape[-1]}, {q.shape[-1]}"
  return None


def splash_attention(q, k, v, *, mask=None, bias=None, scale: Optional[float] = None,
                     interpret: bool = False, blocks=BLOCKS):
  """Attention over (B, L, N, D) arrays with the splash kernel; lengths padded to blocks."""
  reason = _shape_reason(q, k, v, mask, bias)
  if reason is not None:
    raise ValueError(reason)
  scale = q.shape[-1] ** -0.5 if scale is None else scale
  lq, lk, heads = q.shape[1], k.shape[1], q.shape[2]
  bq, bk, lq_pad, lk_pad = splash_blocks(lq, lk, tuple(blocks))
  kernel, segment_ids = _kernel(heads, lq_pad, lk_pad, bq, bk, interpret)
  pad = lambda x, n: jnp.pad(x, ((0, 0), (0, n - x.shape[1]), (0, 0), (0, 0)))
  # Heads-major per example, as the kernel expects.
  qh = pad(q * jnp.asarray(scale, q.dtype), lq_pad).transpose(0, 2, 1, 3)
  kh, vh = (pad(x, lk_pad).transpose(0, 2, 1, 3) for x in (k, v))
  seg = segment_ids(q=jnp.zeros((lq_pad,), jnp.int32),
                    kv=jnp.asarray(np.arange(lk_pad) >= lk, jnp.int32))
  out = jax.vmap(lambda a, b, c: kernel(a, b, c, segment_ids=seg))(qh, kh, vh)
  return out.transpose(0, 2, 1, 3)[:, :lq].astype(q.dtype)
