"""Memory-efficient attention: online softmax over key blocks, no full score matrix.

The flash-attention recurrence (Dao et al. 2022) written with lax.scan, for every backend XLA
compiles. Queries are cut into blocks of `block_q` rows (an outer scan) and keys into blocks of
`block_k` (an inner scan); a step holds one (B, N, block_q, block_k) float32 score block, a
running row maximum m and row sum l (float32 whatever the input dtype) and the float32 output
accumulator. Any length works: q and k/v are zero-padded to block multiples and padded keys get
zero weight. The gradient is a custom VJP that recomputes each score block from q, k and the saved
log-sum-exp (flash-attention's backward), so training memory is O(L * D) as well.

Layout is (B, L, N, D), as in nn/attention.py. mask/bias broadcast to (B, N, Lq, Lk); their size-1
axes stay size 1 (a (1, N, Lq, Lk) relative-position bias is sliced per block, never broadcast).
"""
import functools
from typing import Optional

import jax
import jax.numpy as jnp

# Picked by measurement on 2 CPU cores at 4,516+226 tokens, 8x64 heads (docs/attention.md).
DEFAULT_BLOCK_Q = 256
DEFAULT_BLOCK_K = 512
_MASKED = jnp.finfo(jnp.float32).min   # what 'xla' puts in masked logits: same fully-masked rows


def _round_up(n: int, m: int) -> int:
  return -(-n // m) * m


def _pad_axis(x, axis: int, length: int, value=0):
  if x.shape[axis] == length:
    return x
  pad = [(0, 0)] * x.ndim
  pad[axis] = (0, length - x.shape[axis])
  return jnp.pad(x, pad, constant_values=value)


def _as_4d(x, lq: int, lk: int, lq_pad: int, lk_pad: int, fill):
  """A mask or bias as a 4-d array with its size-1 axes kept and its Lq/Lk axes padded."""
  if x is None:
    return None
  x = jnp.asarray(x)
  x = x.reshape((1,) * (4 - x.ndim) + x.shape)
  if x.shape[-2] not in (1, lq) or x.shape[-1] not in (1, lk):
    raise ValueError(f"attention mask/bias shape {x.shape} does not broadcast to (.., {lq}, {lk})")
  if x.shape[-2] == lq:
    x = _pad_axis(x, 2, lq_pad, fill)
  if x.shape[-1] == lk:
    x = _pad_axis(x, 3, lk_pad, fill)
  return x


def _block(x, i, bq: int, j, bk: int):
  """Rows [i*bq, (i+1)*bq) and columns [j*bk, (j+1)*bk) of a 4-d mask/bias (size-1 axes kept)."""
  if x is None:
    return None
  if x.shape[2] != 1:
    x = jax.lax.dynamic_slice_in_dim(x, i * bq, bq, axis=2)
  if x.shape[3] != 1:
    x = jax.lax.dynamic_slice_in_dim(x, j * bk, bk, axis=3)
  return x


def _scores(qb, kb, j, bk: int, lk: int, mask_b, bias_b, scale: float):
  """One float32 score block: scaled logits + bias, masked like 'xla', padded keys at -inf."""
  s = jnp.einsum("bnqd,bnkd->bnqk", qb, kb, preferred_element_type=jnp.float32) * scale
  if bias_b is not None:
    s = s + bias_b.astype(jnp.float32)
  if mask_b is not None:
    s = jnp.where(mask_b, s, _MASKED)
  if lk % bk:   # only the last key block holds padding; -inf gives it weight exactly zero
    s = jnp.where(j * bk + jnp.arange(bk) < lk, s, -jnp.inf)
  return s


def _blocks(x, b: int):
  """(B, N, L, D) -> (L/b, B, N, b, D): the scanned axis first."""
  B, N, L, D = x.shape
  return x.reshape(B, N, L // b, b, D).transpose(2, 0, 1, 3, 4)


def _unblocks(x):
  nb, B, N, b, D = x.shape
  return x.transpose(1, 2, 0, 3, 4).reshape(B, N, nb * b, D)


def _forward(q, k, v, mask, bias, scale, bq, bk, lk):
  """(out (B, N, Lq_pad, D) in q.dtype, (m, l) each (B, N, Lq_pad) float32).

  The backward pass gets the row max and sum apart rather than as log-sum-exp: a fully masked
  row has m = finfo.min, where m + log(l) rounds back to m and would lose the 1/l.
  """
  kbl, vbl = _blocks(k, bk), _blocks(v, bk)
  nk = kbl.shape[0]

  def q_step(_, xs):
    i, qb = xs

    def k_step(carry, ys):
      m, l, acc = carry
      j, kb, vb = ys
      s = _scores(qb, kb, j, bk, lk, _block(mask, i, bq, j, bk), _block(bias, i, bq, j, bk), scale)
      m_new = jnp.maximum(m, s.max(-1))
      alpha = jnp.exp(m - m_new)
      p = jnp.exp(s - m_new[..., None])
      l = l * alpha + p.sum(-1)
      acc = acc * alpha[..., None] + jnp.einsum(
          "bnqk,bnkd->bnqd", p.astype(v.dtype), vb, preferred_element_type=jnp.float32)
      return (m_new, l, acc), None

    B, N, _, D = qb.shape
    init = (jnp.full((B, N, bq), -jnp.inf, jnp.float32), jnp.zeros((B, N, bq), jnp.float32),
            jnp.zeros((B, N, bq, D), jnp.float32))
    (m, l, acc), _ = jax.lax.scan(k_step, init, (jnp.arange(nk), kbl, vbl))
    return None, ((acc / l[..., None]).astype(q.dtype), m, l)

  qbl = _blocks(q, bq)
  _, (out, m, l) = jax.lax.scan(q_step, None, (jnp.arange(qbl.shape[0]), qbl))
  return _unblocks(out), (m, l)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7, 8))
def _attention(q, k, v, mask, bias, scale, bq, bk, lk):
  return _forward(q, k, v, mask, bias, scale, bq, bk, lk)[0]


def _attention_fwd(q, k, v, mask, bias, scale, bq, bk, lk):
  out, stats = _forward(q, k, v, mask, bias, scale, bq, bk, lk)
  return out, (q, k, v, mask, bias, out, stats)


def _reduce_to(x, shape):
  """Sum x over the axes where `shape` has size 1 (the gradient of a broadcast)."""
  axes = tuple(a for a, (n, m) in enumerate(zip(x.shape, shape)) if m == 1 and n != 1)
  return x.sum(axes, keepdims=True) if axes else x


def _attention_bwd(scale, bq, bk, lk, res, dout):
  q, k, v, mask, bias, out, (m, l) = res
  # D_i = rowsum(dO * O): the softmax Jacobian's diagonal term, once for all key blocks.
  delta = jnp.einsum("bnqd,bnqd->bnq", dout.astype(jnp.float32), out.astype(jnp.float32))
  kbl, vbl = _blocks(k, bk), _blocks(v, bk)
  nk = kbl.shape[0]
  B, N, _, D = q.shape

  def q_step(carry, xs):
    dk_acc, dv_acc, dbias = carry
    i, qb, dob, m_b, l_b, delta_b = xs

    def k_step(dq, ys):
      j, kb, vb = ys
      bias_b, mask_b = _block(bias, i, bq, j, bk), _block(mask, i, bq, j, bk)
      s = _scores(qb, kb, j, bk, lk, mask_b, bias_b, scale)
      p = jnp.exp(s - m_b[..., None]) / l_b[..., None]
      dv = jnp.einsum("bnqk,bnqd->bnkd", p.astype(dob.dtype), dob,
                      preferred_element_type=jnp.float32)
      dp = jnp.einsum("bnqd,bnkd->bnqk", dob, vb, preferred_element_type=jnp.float32)
      ds = p * (dp - delta_b[..., None])
      if mask_b is not None:   # 'xla' masks with a where: no gradient flows into masked logits
        ds = jnp.where(mask_b, ds, 0.0)
      dq = dq + jnp.einsum("bnqk,bnkd->bnqd", ds.astype(kb.dtype), kb,
                           preferred_element_type=jnp.float32) * scale
      dk = jnp.einsum("bnqk,bnqd->bnkd", ds.astype(qb.dtype), qb,
                      preferred_element_type=jnp.float32) * scale
      dbias_b = None if bias is None else _reduce_to(ds, bias_b.shape)
      return dq, (dk, dv, dbias_b)

    dq, (dk, dv, dbias_blocks) = jax.lax.scan(
        k_step, jnp.zeros((B, N, bq, D), jnp.float32), (jnp.arange(nk), kbl, vbl))
    if bias is not None:
      dbias = _add_bias_row(dbias, dbias_blocks, i, bq)
    return (dk_acc + dk, dv_acc + dv, dbias), dq

  nq = q.shape[2] // bq
  init = (jnp.zeros(kbl.shape, jnp.float32), jnp.zeros(vbl.shape, jnp.float32),
          None if bias is None else jnp.zeros(bias.shape, jnp.float32))
  rows = lambda x: x.reshape(B, N, nq, bq).transpose(2, 0, 1, 3)
  xs = (jnp.arange(nq), _blocks(q, bq), _blocks(dout, bq), m, l, rows(delta))
  (dk, dv, dbias), dq = jax.lax.scan(q_step, init, xs)
  grads = (_unblocks(dq).astype(q.dtype), _unblocks(dk).astype(k.dtype),
           _unblocks(dv).astype(v.dtype))
  return grads + (None, None if bias is None else dbias.astype(bias.dtype))


def _add_bias_row(dbias, blocks, i, bq):
  """Adds one query block's (nk, B, N, bq|1, bk|1) bias gradients into the full bias gradient."""
  if dbias.shape[3] == 1:
    row = blocks.sum(0)
  else:
    nk, B, N, rows, bk = blocks.shape
    row = blocks.transpose(1, 2, 3, 0, 4).reshape(B, N, rows, nk * bk)
  if dbias.shape[2] == 1:
    return dbias + row
  return jax.lax.dynamic_update_slice_in_dim(
      dbias, jax.lax.dynamic_slice_in_dim(dbias, i * bq, bq, axis=2) + row, i * bq, axis=2)


_attention.defvjp(_attention_fwd, _attention_bwd)


def blockwise_attention(q, k, v, *, mask=None, bias=None, scale: Optional[float] = None,
                        block_q: int = DEFAULT_BLOCK_Q, block_k: int = DEFAULT_BLOCK_K):
  """Attention over (B, L, N, D) arrays without a full score matrix; matches 'xla' numerically.

  Blocks larger than the (padded-to-8) sequence shrink to it, so short sequences pay no padding.
  """
  scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
  lq, lk = q.shape[1], k.shape[1]
  bq, bk = min(block_q, _round_up(lq, 8)), min(block_k, _round_up(lk, 8))
  lq_pad, lk_pad = _round_up(lq, bq), _round_up(lk, bk)
  q, k, v = (x.transpose(0, 2, 1, 3) for x in (q, k, v))
  q = _pad_axis(q, 2, lq_pad)
  k, v = _pad_axis(k, 2, lk_pad), _pad_axis(v, 2, lk_pad)
  mask = _as_4d(mask, lq, lk, lq_pad, lk_pad, True)
  if mask is not None:
    mask = mask.astype(bool)
  bias = _as_4d(bias, lq, lk, lq_pad, lk_pad, 0)
  out = _attention(q, k, v, mask, bias, scale, bq, bk, lk)
  return out[:, :, :lq].transpose(0, 2, 1, 3)
