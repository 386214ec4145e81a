import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sem_repa_jax.training import optimizers


def test_dynamic_code_books():
  signed, unsigned = optimizers.dynamic_code_book(True), optimizers.dynamic_code_book(False)
  for book in (signed, unsigned):
    assert book.shape == (256,) and np.all(np.diff(book) > 0)
    assert 0.0 in book and book.max() == 1.0
  assert signed.min() < -0.99 and unsigned.min() == 0.0
  # Reaches 1e-6 of the block maximum: second moments spanning decades keep their small values.
  assert np.abs(signed[signed != 0]).min() < 1e-6 and unsigned[1] < 1e-6


@pytest.mark.parametrize("signed", [True, False])
def test_code_lookup_finds_the_nearest_code(signed):
  book = optimizers._SIGNED if signed else optimizers._UNSIGNED
  r = np.random.default_rng(0)
  x = r.uniform(-1 if signed else 0, 1, 20000) * 10.0 ** r.uniform(-8, 0, 20000)
  x = np.concatenate([x, book.values, book.mids * (1 + 1e-6), book.mids * (1 - 1e-6), [0, 1]])
  x = x.astype(np.float32)
  nearest = np.abs(x[:, None] - book.values[None, :].astype(np.float64)).argmin(1)
  got = np.asarray(book.encode(jnp.asarray(x)))
  np.testing.assert_array_equal(book.values[got], book.values[nearest])


def test_quantization_error_is_relative_to_magnitude():
  x = jnp.asarray(np.random.default_rng(0).lognormal(0, 3, size=(3, 1000)), jnp.float32)
  q = optimizers.quantize(x, 256, signed=False)
  assert q.codes.dtype == jnp.uint8 and q.codes.shape == x.shape and q.scales.shape == (12,)
  back = optimizers.dequantize(q, 256, signed=False)
  blocks = optimizers._blocks(x, 256)
  absmax = np.repeat(np.asarray(jnp.max(blocks, 1)), 256)[:x.size].reshape(x.shape)
  rel_to_block = np.abs(np.asarray(back - x)) / absmax
  assert rel_to_block.max() < 0.01      # top decade: 128 steps over [0.1, 1]
  big = np.asarray(x) > 0.1 * absmax
  assert (np.abs(np.asarray(back - x))[big] / np.asarray(x)[big]).max() < 0.04


def _toy_problem():
  r = np.random.default_rng(1)
  a = jnp.asarray(r.normal(size=(256, 64)), jnp.float32)
  target = {"w": jnp.asarray(r.normal(size=(64, 96)), jnp.float32),
            "b": jnp.asarray(r.normal(size=(96,)), jnp.float32)}
  params = jax.tree.map(jnp.zeros_like, target)

  def loss(p):
    return jnp.mean((a @ p["w"] + p["b"] - (a @ target["w"] + target["b"])) ** 2)
  return params, loss


def _run(tx, params, loss, steps):
  state = tx.init(params)

  @jax.jit
  def step(p, s):
    l, g = jax.value_and_grad(loss)(p)
    u, s = tx.update(g, s, p)
    return optax.apply_updates(p, u), s, l
  losses = []
  for _ in range(steps):
    params, state, l = step(params, state)
    losses.append(float(l))
  return params, state, losses


def test_8bit_adamw_tracks_fp32_adamw_and_uses_a_quarter_of_the_memory():
  params, loss = _toy_problem()
  cfg = optimizers.default_config()
  cfg.learning_rate, cfg.block_size, cfg.min_quantized_size = 3e-2, 256, 1024
  tx32, _ = optimizers.make_optimizer(cfg)
  cfg.moments_dtype = "int8"
  tx8, _ = optimizers.make_optimizer(cfg)
  p32, s32, l32 = _run(tx32, params, loss, 30)
  p8, s8, l8 = _run(tx8, params, loss, 30)
  # Quantization noise only: the parameters moved ~0.6 on average; 8-bit stays within 5% of that
  # path, on the quantized matrix and on the fp32-moment bias alike, and the losses agree to 2%.
  for k in ("w", "b"):
    moved = np.abs(np.asarray(p32[k] - params[k])).mean()
    diff = np.abs(np.asarray(p8[k] - p32[k])).mean()
    assert diff < 0.05 * moved, (k, diff, moved)
  assert abs(l8[-1] - l32[-1]) < 0.02 * l32[-1] and l8[-1] < 0.3 * l8[0]
  # Moments: 2 x 4 bytes/elem in fp32 vs 2 x (1 + 4/256) bytes/elem for the 64x96 kernel.
  w32 = optimizers.state_bytes(s32[1].mu["w"]) + optimizers.state_bytes(s32[1].nu["w"])
  w8 = optimizers.state_bytes(s8[1].mu["w"]) + optimizers.state_bytes(s8[1].nu["w"])
  assert w8 / w32 == pytest.approx((1 + 4 / 256) / 4)
  assert isinstance(s8[1].mu["b"], jax.Array) and s8[1].mu["b"].dtype == jnp.float32


def test_schedules_and_config_errors():
  cfg = optimizers.default_config()
  cfg.learning_rate, cfg.schedule, cfg.warmup_steps, cfg.decay_steps = 1.0, "warmup_cosine", 10, 110
  cfg.end_lr_ratio = 0.1
  s = optimizers.make_schedule(cfg)
  np.testing.assert_allclose([float(s(0)), float(s(5)), float(s(10)), float(s(60)), float(s(110))],
                             [0.0, 0.5, 1.0, 0.1 + 0.9 * 0.5, 0.1], atol=1e-6)
  cfg.schedule, cfg.warmup_steps = "constant", 4
  s = optimizers.make_schedule(cfg)
  np.testing.assert_allclose([float(s(2)), float(s(4)), float(s(1000))], [0.5, 1.0, 1.0])
  with pytest.raises(ValueError, match="config.optimizer.lr"):
    bad = optimizers.default_config().to_dict()
    optimizers.resolve_config({**bad, "lr": 1.0})
  cfg.moments_dtype = "int4"
  with pytest.raises(ValueError, match="moments_dtype = 'int4'"):
    optimizers.make_optimizer(cfg)
