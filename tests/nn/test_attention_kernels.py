"""The attention registry and its CPU-runnable kernels against 'xla', forward and gradient."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sem_repa_jax.nn import attention as attn
from sem_repa_jax.nn.attention import dot_product_attention, xla_attention
from sem_repa_jax.nn.blockwise_attention import blockwise_attention
from sem_repa_jax.nn.splash_attention import splash_attention, splash_blocks


def _qkv(seed, b, lq, lk, n, d, dtype=jnp.float32):
  r = np.random.default_rng(seed)
  return tuple(jnp.asarray(r.standard_normal(s), dtype) for s in
               ((b, lq, n, d), (b, lk, n, d), (b, lk, n, d)))


def _loss(fn, **kw):
  # A fixed non-uniform cotangent, so every output element's gradient is checked.
  return lambda q, k, v, *bias: jnp.sum(
      fn(q, k, v, **kw, **({"bias": bias[0]} if bias else {})).astype(jnp.float32)
      * jnp.cos(jnp.arange(q.shape[-1]) + 1.0))


def _compare(fn, q, k, v, atol, mask=None, bias=None):
  kw = {} if mask is None else {"mask": mask}
  np.testing.assert_allclose(np.asarray(fn(q, k, v, **kw, **({} if bias is None else {"bias": bias})),
                                        np.float32),
                             np.asarray(xla_attention(q, k, v, **kw, bias=bias), np.float32),
                             atol=atol, rtol=0)
  args = (q, k, v) + (() if bias is None else (bias,))
  argnums = tuple(range(len(args)))
  got = jax.grad(_loss(fn, **kw), argnums)(*args)
  want = jax.grad(_loss(xla_attention, **kw), argnums)(*args)
  for name, g, w in zip("qkvb", got, want):
    np.testing.assert_allclose(np.asarray(g, np.float32), np.asarray(w, np.float32), atol=atol * 4,
                               rtol=0, err_msg=f"d{name}")


# (batch, Lq, Lk, heads, head_dim, block_q, block_k): block multiples, ragged lengths, cross-attention.
SHAPES = [(1, 64, 64, 2, 8, 32, 16), (2, 37, 53, 3, 16, 16, 16), (2, 5, 100, 2, 8, 8, 32),
          (1, 70, 9, 2, 16, 32, 8)]


@pytest.mark.parametrize("shape", SHAPES)
def test_blockwise_matches_xla_float32(shape):
  b, lq, lk, n, d, bq, bk = shape
  q, k, v = _qkv(0, b, lq, lk, n, d)
  _compare(lambda *a, **kw: blockwise_attention(*a, block_q=bq, block_k=bk, **kw), q, k, v, 2e-6)


def test_blockwise_mask_bias_and_fully_masked_rows_match_xla():
  b, lq, lk, n, d = 2, 37, 53, 3, 16
  q, k, v = _qkv(1, b, lq, lk, n, d)
  r = np.random.default_rng(2)
  mask = r.random((b, 1, lq, lk)) > 0.3
  mask[0, 0, 0] = False   # a row with nothing to attend to: 'xla' averages v uniformly
  mask = jnp.asarray(mask)
  bias = jnp.asarray(r.standard_normal((1, n, lq, lk)), jnp.float32)   # T5-style, per head
  fn = lambda *a, **kw: blockwise_attention(*a, block_q=16, block_k=16, **kw)
  _compare(fn, q, k, v, 2e-6, mask=mask)
  _compare(fn, q, k, v, 2e-6, bias=bias)
  _compare(fn, q, k, v, 2e-6, mask=mask, bias=bias)
  _compare(fn, q, k, v, 2e-6, bias=bias[:, :, :1])    # broadcast over queries: summed gradient


def test_blockwise_matches_xla_bfloat16():
  q, k, v = _qkv(3, 2, 45, 77, 2, 32, jnp.bfloat16)
  _compare(lambda *a, **kw: blockwise_attention(*a, block_q=16, block_k=32, **kw), q, k, v, 3e-2)


def _avals(jaxpr):
  for eqn in jaxpr.eqns:
    for var in eqn.outvars:
      yield var.aval
    for p in eqn.params.values():
      for sub in (p if isinstance(p, (tuple, list)) else [p]):
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns"):
          yield from _avals(inner)


def test_blockwise_never_builds_a_full_score_matrix():
  lq, lk = 300, 400
  q, k, v = _qkv(4, 1, lq, lk, 2, 8)
  fn = lambda q, k, v: blockwise_attention(q, k, v, block_q=64, block_k=128)
  for jaxpr in (jax.make_jaxpr(fn)(q, k, v), jax.make_jaxpr(jax.grad(_loss(fn), (0, 1, 2)))(q, k, v)):
    biggest = max(int(np.prod(a.shape)) for a in _avals(jaxpr.jaxpr) if hasattr(a, "shape"))
    assert biggest < lq * lk, biggest
  full = jax.make_jaxpr(jax.grad(_loss(xla_attention), (0, 1, 2)))(q, k, v)
  assert max(int(np.prod(a.shape)) for a in _avals(full.jaxpr) if hasattr(a, "shape")) >= 2 * lq * lk


def test_splash_blocks_pad_model_lengths_by_little():
  assert splash_blocks(17_776, 17_776) == (512, 512, 17_920, 17_920)    # CogVideoX-5b 13x60x90 + text
  assert splash_blocks(4_516, 4_516) == (512, 512, 4_608, 4_608)       # 13x30x44 + text
  assert splash_blocks(9_216, 1) == (512, 128, 9_216, 128)             # SVD image cross-attention
  assert splash_blocks(2_304, 2_304)[2] == 2_304 and splash_blocks(576, 576)[2] == 640
  assert splash_blocks(25, 25) == (128, 128, 128, 128)                 # SVD temporal attention
  with pytest.raises(ValueError, match="positive"):
    splash_blocks(0, 4)


@pytest.mark.parametrize("lq,lk", [(200, 200), (130, 77)])
def test_splash_in_interpret_mode_matches_xla(lq, lk):
  # Pallas' interpret mode runs the TPU kernel on CPU: same padding, segment ids and VJP.
  q, k, v = _qkv(5, 1, lq, lk, 2, 16)
  _compare(lambda *a, **kw: splash_attention(*a, interpret=True, blocks=(128,), **kw), q, k, v, 2e-5)


def test_registry_names_errors_and_auto_policy():
  q, k, v = _qkv(6, 1, 8, 8, 2, 8)
  with pytest.raises(ValueError, match=r"'flash9' is not one of \('xla', 'blockwise', 'cudnn', "
                                       r"'splash'.*'auto'\)"):
    dot_product_attention(q, k, v, implementation="flash9")
  if jax.default_backend() == "cpu":
    with pytest.raises(ValueError, match="splash attention needs a TPU"):
      dot_product_attention(q, k, v, implementation="splash")
    big = jax.ShapeDtypeStruct((1, 1024, 8, 64), jnp.float32)
    assert attn.choose(big, big, big) == "blockwise"
    assert attn.choose(q, k, v) == "xla"
    assert attn.choose(big, k, v) == "xla"   # 1,024 queries over 8 keys: a small score matrix
  np.testing.assert_allclose(dot_product_attention(q, k, v, implementation="blockwise"),
                             dot_product_attention(q, k, v, implementation="xla"), atol=2e-6)


def test_register_adds_a_kernel_that_models_accept():
  doubled = attn.Kernel("test-doubled", lambda q, k, v, **kw: 2 * xla_attention(q, k, v, **kw),
                        lambda q, k, v, mask, bias: None if bias is None else "no bias here")
  attn.register(doubled)
  try:
    assert "test-doubled" in attn.IMPLEMENTATIONS
    q, k, v = _qkv(7, 1, 4, 4, 1, 8)
    np.testing.assert_allclose(dot_product_attention(q, k, v, implementation="test-doubled"),
                               2 * xla_attention(q, k, v), atol=1e-6)
    assert not doubled.supports(q, k, v, bias=jnp.zeros((4, 4)))
    with pytest.raises(ValueError, match="cannot run here: no bias here"):
      dot_product_attention(q, k, v, implementation="test-doubled", bias=jnp.zeros((4, 4)))
    with pytest.raises(ValueError, match="reserved"):
      attn.register(attn.Kernel("auto", xla_attention))
  finally:
    attn._KERNELS.pop("test-doubled")
