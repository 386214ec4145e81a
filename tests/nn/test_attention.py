import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from sem_repa_jax.nn.attention import dot_product_attention


def _qkv(seed, b=2, lq=7, lk=9, n=3, d=16):
  r = np.random.default_rng(seed)
  return (r.standard_normal((b, lq, n, d)).astype(np.float32),
          r.standard_normal((b, lk, n, d)).astype(np.float32),
          r.standard_normal((b, lk, n, d)).astype(np.float32))


def test_xla_matches_torch_sdpa():
  q, k, v = _qkv(0)
  out = dot_product_attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), implementation="xla")
  t = lambda x: torch.from_numpy(x).transpose(1, 2)
  ref = torch.nn.functional.scaled_dot_product_attention(t(q), t(k), t(v)).transpose(1, 2).numpy()
  np.testing.assert_allclose(np.asarray(out), ref, atol=1e-5)


def test_mask_and_scale_match_torch():
  q, k, v = _qkv(1)
  mask = np.random.default_rng(2).random((2, 1, 7, 9)) > 0.3
  mask[..., 0] = True
  out = dot_product_attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), mask=jnp.asarray(mask),
                              scale=0.3)
  t = lambda x: torch.from_numpy(x).transpose(1, 2)
  ref = torch.nn.functional.scaled_dot_product_attention(
      t(q), t(k), t(v), attn_mask=torch.from_numpy(mask), scale=0.3).transpose(1, 2).numpy()
  np.testing.assert_allclose(np.asarray(out), ref, atol=1e-5)


def test_auto_falls_back_to_xla_on_cpu_and_cudnn_explains():
  q, k, v = (jnp.asarray(x) for x in _qkv(3))
  np.testing.assert_array_equal(dot_product_attention(q, k, v, implementation="auto"),
                                dot_product_attention(q, k, v, implementation="xla"))
  if jax.default_backend() != "gpu":
    with pytest.raises(ValueError, match="cudnn attention needs an NVIDIA GPU"):
      dot_product_attention(q, k, v, implementation="cudnn")
  with pytest.raises(ValueError, match="not one of"):
    dot_product_attention(q, k, v, implementation="flash9")
