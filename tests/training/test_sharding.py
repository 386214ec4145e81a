import jax
import numpy as np
import pytest

from sem_repa_jax.training import sharding
from tests.training import toy


def run_steps(mesh_shape, devices, n=3, batch=16):
  cfg = toy.config(mesh_shape)
  mesh, rules, abstract, init, step_fn = toy.setup(cfg, devices)
  state = init()
  data = toy.dataset(batch)
  for _ in range(n):
    state, metrics = step_fn(state, sharding.shard_batch(next(data), mesh, rules))
  return state, metrics


@pytest.fixture(scope="module")
def unsharded():
  return run_steps((1, 1, 1), jax.devices()[:1])


@pytest.mark.parametrize("mesh_shape", [(2, 4, 1), (4, 1, 2)])
def test_sharded_step_matches_unsharded(mesh_shape, unsharded):
  state, metrics = run_steps(mesh_shape, None)
  ref_state, ref_metrics = unsharded
  kernel = state.params["params"]["Dense_0"]["kernel"]
  # The parameters really are split: embed over fsdp, mlp over tensor.
  expected = {(2, 4, 1): (4, 32), (4, 1, 2): (16, 16)}[mesh_shape]
  assert {s.data.shape for s in kernel.addressable_shards} == {expected}
  mu = state.opt_state[1].mu["params"]["Dense_0"]["kernel"]
  assert mu.sharding == kernel.sharding
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(ref_state)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-6)
  np.testing.assert_allclose(float(metrics["loss"]), float(ref_metrics["loss"]), atol=1e-6)


def test_batch_is_split_over_data_and_fsdp():
  cfg = toy.config((2, 4, 1))
  mesh = toy.mesh_lib.make_mesh(cfg)
  rules = sharding.axis_rules(cfg)
  x = np.arange(16 * 3, dtype=np.float32).reshape(16, 3)
  g = sharding.shard_batch({"x": x}, mesh, rules)["x"]
  assert tuple(g.sharding.spec) == (("data", "fsdp"), None)
  assert {s.data.shape for s in g.addressable_shards} == {(2, 3)}
  np.testing.assert_array_equal(np.asarray(g), x)


def test_indivisible_dimension_is_explained():
  import flax.linen as nn
  import jax.numpy as jnp

  class Odd(nn.Module):
    @nn.compact
    def __call__(self, x):
      return nn.Dense(3, kernel_init=nn.with_logical_partitioning(
          nn.initializers.lecun_normal(), ("embed", "mlp")))(x)
  cfg = toy.config((1, 1, 8))
  mesh = toy.mesh_lib.make_mesh(cfg)
  with pytest.raises(ValueError, match=r"\['Dense_0'\]\['kernel'\].*dimension 1 \(3\).*tensor"):
    sharding.init_sharded(Odd().init, mesh, sharding.axis_rules(cfg), jax.random.PRNGKey(0),
                          jnp.zeros((1, 4)))
