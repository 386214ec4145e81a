"""AdamW with the config's schedule, clipping and optional 8-bit moments.

8-bit moments follow Dettmers et al. 2022 ("8-bit Optimizers via Block-wise Quantization"):
each moment is cut into blocks of `block_size` elements, every block is divided by its absmax
and each value is stored as the uint8 index of the nearest entry of a *dynamic* (non-linear,
exponent + fraction) code book. A linear int8 grid cannot hold the second moment: its values
span many decades inside one block, and those rounded to zero make m / sqrt(v) explode; the
dynamic code reaches down to 1e-7 of the block maximum. The first moment uses the signed code
book, the second the unsigned one (twice the resolution, v >= 0). Tensors smaller than
`min_quantized_size` keep fp32 moments, as biases and norms are small and sensitive.
"""
import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sem_repa_jax.training.optimizer_config import default_config  # noqa: F401 (re-exported)


def resolve_config(cfg):
  """`cfg` (config.optimizer, possibly partial) over the defaults; an unknown field is an error."""
  out = default_config()
  if cfg is not None:
    for key, value in cfg.items():
      if key not in out:
        raise ValueError(f"config.optimizer.{key} is not an optimizer setting; known: "
                         f"{', '.join(sorted(out.keys()))}")
      out[key] = value
  return out


def make_schedule(cfg) -> optax.Schedule:
  lr = float(cfg.learning_rate)
  if cfg.schedule == "constant":
    if cfg.warmup_steps:
      return optax.join_schedules([optax.linear_schedule(0.0, lr, cfg.warmup_steps),
                                   optax.constant_schedule(lr)], [cfg.warmup_steps])
    return optax.constant_schedule(lr)
  if cfg.schedule == "warmup_cosine":
    if cfg.decay_steps <= cfg.warmup_steps:
      raise ValueError(f"config.optimizer.decay_steps ({cfg.decay_steps}) must exceed "
                       f"warmup_steps ({cfg.warmup_steps}) for the cosine schedule")
    return optax.warmup_cosine_decay_schedule(0.0, lr, cfg.warmup_steps, cfg.decay_steps,
                                              end_value=lr * cfg.end_lr_ratio)
  raise ValueError(f"config.optimizer.schedule = {cfg.schedule!r}: expected 'constant' or "
                   "'warmup_cosine'")


def make_optimizer(cfg) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """(transformation, learning-rate schedule) from `config.optimizer` (see default_config)."""
  cfg = resolve_config(cfg)
  schedule = make_schedule(cfg)
  parts = []
  if cfg.grad_clip_norm > 0:
    parts.append(optax.clip_by_global_norm(cfg.grad_clip_norm))
  if cfg.moments_dtype == "float32":
    parts.append(optax.scale_by_adam(b1=cfg.b1, b2=cfg.b2, eps=cfg.eps))
  elif cfg.moments_dtype == "int8":
    parts.append(scale_by_adam_8bit(b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, block_size=cfg.block_size,
                                    min_quantized_size=cfg.min_quantized_size))
  else:
    raise ValueError(f"config.optimizer.moments_dtype = {cfg.moments_dtype!r}: expected 'float32' "
                     "or 'int8'")
  if cfg.weight_decay:
    parts.append(optax.add_decayed_weights(cfg.weight_decay))
  parts.append(optax.scale_by_learning_rate(schedule))
  return optax.chain(*parts), schedule


# ---- block-wise dynamic quantization ---------------------------------------------------------

def dynamic_code_book(signed: bool) -> np.ndarray:
  """256 sorted values in [-1, 1] (signed) or [0, 1]: decades 1e-6..1 split into linear fractions.

  As bitsandbytes' create_dynamic_map: small decades get few entries, the top decade most;
  0 and 1 are exact.
  """
  exponent_bits = 7
  value_bits = 7 if signed else 8
  data = [0.0, 1.0]
  for i in range(exponent_bits):
    # Decade 10^(i-6) gets 2^(i + value_bits - exponent_bits) linear steps between 0.1 and 1.
    bounds = np.linspace(0.1, 1.0, 2 ** (i + value_bits - exponent_bits) + 1)
    means = 10.0 ** (i - exponent_bits + 1) * (bounds[:-1] + bounds[1:]) / 2.0
    data += list(means) + (list(-means) if signed else [])
  # As bitsandbytes: the signed book has no -1, so a block's negative absmax rounds to -0.993.
  data = np.unique(np.asarray(data, np.float64))
  assert data.size == 256, data.size
  return data.astype(np.float32)


_OCTAVES = 28     # codes reach 3e-7 of the block max; 2^-28 is below that
_SPAN = _OCTAVES + 1   # |x| <= 1 maps into [0, _SPAN]


def _log_position(x, xp=jnp):
  """A monotone map of [-1, 1] onto [-_SPAN, _SPAN] that spreads the decades evenly.

  Piecewise-linear log2 from the float's exponent and mantissa: exact in float32 (no rounding),
  so the device and the numpy table agree bit for bit.
  """
  mantissa, exponent = xp.frexp(xp.abs(x))            # |x| = mantissa * 2^exponent, m in [0.5, 1)
  mag = xp.maximum(exponent.astype(xp.float32) + 2 * mantissa - 1 + _OCTAVES, 0)
  mag = xp.where(mantissa == 0, 0, mag)                # frexp(0) = (0, 0)
  return xp.where(x < 0, -mag, mag).astype(xp.float32)


class _CodeBook:
  """A code book plus a lookup table that finds the nearest code in O(1): 2^14 equal buckets of
  `_log_position` hold at most one decision boundary (midpoint) each, so the nearest code of x is
  table[bucket(x)] + (x > next midpoint). A binary search instead costs 8 dependent gathers per
  element (~25x slower than the rest of the Adam update on CPU)."""

  BUCKETS = 2 ** 14

  def __init__(self, signed: bool):
    self.values = dynamic_code_book(signed)
    self.mids = ((self.values[1:].astype(np.float64) + self.values[:-1]) / 2).astype(np.float32)
    t = _log_position(self.mids, np)
    edges = np.linspace(-_SPAN, _SPAN, self.BUCKETS + 1)
    assert np.all(np.diff(t) > 2 * _SPAN / self.BUCKETS), "buckets too coarse for the code book"
    self.table = np.searchsorted(t, edges[:-1], side="left").astype(np.int32)

  def encode(self, x):
    """Index of the nearest code for each x in [-1, 1]."""
    t = _log_position(x)
    bucket = jnp.clip(((t + _SPAN) * (self.BUCKETS / (2 * _SPAN))).astype(jnp.int32), 0,
                      self.BUCKETS - 1)
    first = jnp.asarray(self.table)[bucket]
    nxt = jnp.asarray(self.mids)[jnp.minimum(first, self.mids.size - 1)]
    return (first + ((x > nxt) & (first < self.mids.size))).astype(jnp.uint8)


_SIGNED = _CodeBook(True)
_UNSIGNED = _CodeBook(False)


class QuantizedMoment(NamedTuple):
  """uint8 codes in the parameter's shape (so they shard like it) and one fp32 absmax per block."""
  codes: jax.Array
  scales: jax.Array


def _blocks(x, block_size):
  flat = x.reshape(-1)
  pad = (-flat.size) % block_size
  return (jnp.pad(flat, (0, pad)) if pad else flat).reshape(-1, block_size)


def quantize(x, block_size: int, signed: bool) -> QuantizedMoment:
  blocks = _blocks(x.astype(jnp.float32), block_size)
  scales = jnp.max(jnp.abs(blocks), axis=1)
  normed = blocks / jnp.where(scales > 0, scales, 1.0)[:, None]
  codes = (_SIGNED if signed else _UNSIGNED).encode(normed)
  codes = codes.reshape(-1)[:x.size].reshape(x.shape)
  return QuantizedMoment(codes, scales)


def dequantize(q: QuantizedMoment, block_size: int, signed: bool) -> jax.Array:
  book = jnp.asarray((_SIGNED if signed else _UNSIGNED).values)
  values = _blocks(book[q.codes.astype(jnp.int32)], block_size) * q.scales[:, None]
  return values.reshape(-1)[:q.codes.size].reshape(q.codes.shape)


class ScaleByAdam8bitState(NamedTuple):
  count: jax.Array
  mu: optax.Updates   # per leaf: QuantizedMoment, or fp32 array for small tensors
  nu: optax.Updates


def scale_by_adam_8bit(b1=0.9, b2=0.999, eps=1e-8, block_size=2048,
                       min_quantized_size=4096) -> optax.GradientTransformation:
  """optax.scale_by_adam with moments stored block-wise quantized (8 bits + 4/block_size bytes)."""
  def quantized(p):
    return p.size >= min_quantized_size

  def init(params):
    def zeros(p, signed):
      z = jnp.zeros(p.shape, jnp.float32)
      return quantize(z, block_size, signed) if quantized(p) else z
    return ScaleByAdam8bitState(
        count=jnp.zeros([], jnp.int32),
        mu=jax.tree.map(lambda p: zeros(p, True), params),
        nu=jax.tree.map(lambda p: zeros(p, False), params))

  def update(updates, state, params=None):
    del params
    count = optax.safe_increment(state.count)
    c1 = 1 - b1 ** count.astype(jnp.float32)
    c2 = 1 - b2 ** count.astype(jnp.float32)

    def one(g, m, v):
      is_q = isinstance(m, QuantizedMoment)
      g32 = g.astype(jnp.float32)
      m = (dequantize(m, block_size, True) if is_q else m) * b1 + (1 - b1) * g32
      v = (dequantize(v, block_size, False) if is_q else v) * b2 + (1 - b2) * g32 * g32
      u = (m / c1) / (jnp.sqrt(v / c2) + eps)
      if is_q:
        m, v = quantize(m, block_size, True), quantize(v, block_size, False)
      return u.astype(g.dtype), m, v

    is_moment = lambda x: isinstance(x, QuantizedMoment)
    treedef = jax.tree.structure(updates)
    out = [one(g, m, v) for g, m, v in zip(
        jax.tree.leaves(updates),
        jax.tree.leaves(state.mu, is_leaf=is_moment),
        jax.tree.leaves(state.nu, is_leaf=is_moment))]
    new_updates = jax.tree.unflatten(treedef, [o[0] for o in out])
    mu = jax.tree.unflatten(treedef, [o[1] for o in out])
    nu = jax.tree.unflatten(treedef, [o[2] for o in out])
    return new_updates, ScaleByAdam8bitState(count, mu, nu)

  return optax.GradientTransformation(init, update)


def state_bytes(tree) -> int:
  """Bytes held by the arrays of a tree (e.g. an optimizer state)."""
  return sum(int(np.prod(x.shape)) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


@dataclasses.dataclass(frozen=True)
class EMA:
  """Exponential moving average of the params: ema <- decay * ema + (1 - decay) * params."""
  decay: float

  def update(self, ema, params):
    return jax.tree.map(lambda e, p: (self.decay * e + (1 - self.decay) * p.astype(e.dtype)).astype(e.dtype),
                        ema, params)
