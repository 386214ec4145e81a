"""nn.stacking: remat by policy name, alone and under scan, leaves values and gradients unchanged."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sem_repa_jax.nn.stacking import REMAT_POLICIES, remat, scanned


class Block(nn.Module):
  @nn.compact
  def __call__(self, x, _=None):
    return jnp.tanh(nn.Dense(x.shape[-1], name="dense")(x)) + x, None


def test_remat_none_is_the_class_itself_and_unknown_names_fail():
  assert remat(Block, "none") is Block
  with pytest.raises(ValueError, match=r"IResNet.remat 'most': expected 'none' or one of"):
    remat(Block, "most", owner="IResNet.remat")


@pytest.mark.parametrize("policy", sorted(REMAT_POLICIES))
def test_remat_keeps_values_gradients_and_names(policy):
  x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 5)), jnp.float32)
  plain, wrapped = Block(name="b"), remat(Block, policy)(name="b")
  v = plain.init(jax.random.PRNGKey(0), x)
  assert (jax.tree_util.tree_structure(wrapped.init(jax.random.PRNGKey(0), x))
          == jax.tree_util.tree_structure(v))
  loss = lambda m: lambda p, x: jnp.sum(m.apply(p, x)[0] ** 2)
  np.testing.assert_allclose(wrapped.apply(v, x)[0], plain.apply(v, x)[0], rtol=1e-6)
  g_plain = jax.grad(loss(plain))(v, x)
  g_remat = jax.grad(loss(wrapped))(v, x)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5), g_plain, g_remat)


def test_scanned_stacks_parameters_on_a_layers_axis():
  x = jnp.ones((2, 5))
  stack = scanned(Block, 3, "dots", broadcast_args=1)(name="layers")
  v = stack.init(jax.random.PRNGKey(0), x, None)
  kernel = v["params"]["dense"]["kernel"]
  assert kernel.shape == (3, 5, 5)
