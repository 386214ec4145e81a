import functools

import jax
import numpy as np
import pytest

from sem_repa_jax.training import sharding
from tests.training import toy


@functools.lru_cache
def _setup(mesh_shape, single_device):
  return toy.setup(toy.config(mesh_shape), jax.devices()[:1] if single_device else None)


def run_steps(mesh_shape, single_device, n=3, batch=16):
  mesh, rules, abstract, init, step_fn = _setup(mesh_shape, single_device)
  state = init()
  data = toy.dataset(batch)
  for _ in range(n):
    state, metrics = step_fn(state, sharding.shard_batch(next(data), mesh, rules))
  return state, metrics


@pytest.fixture(scope="module")
def unsharded():
  return run_steps((1, 1, 1), True)


@pytest.mark.parametrize("mesh_shape", [(2, 4, 1), (4, 1, 2)])
def test_sharded_step_matches_unsharded(mesh_shape, unsharded):
  state, metrics = run_steps(mesh_shape, False)
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


def test_bf16_compute_keeps_fp32_master_weights():
  import jax.numpy as jnp
  cfg = toy.config((1, 1, 1))
  devices = jax.devices()[:1]
  mesh, rules, _, init, step_fn = toy.setup(cfg, devices, module=toy.ToyMLP(dtype=jnp.bfloat16))
  state = init()
  batch = sharding.shard_batch(next(toy.dataset(16)), mesh, rules)
  state, metrics = step_fn(state, batch)
  assert {x.dtype for x in jax.tree.leaves(state.params)} == {jnp.dtype(jnp.float32)}
  assert metrics["loss"].dtype == jnp.float32 and float(metrics["skipped"]) == 0
  ref_state, ref_metrics = run_steps((1, 1, 1), True, n=1)
  # bf16 matmuls: loss and gradient agree to bf16 precision. Adam's first step is lr * sign(g),
  # so only elements whose tiny gradient flips sign under bf16 noise may move the other way.
  for k in ("loss", "grad_norm"):
    np.testing.assert_allclose(float(metrics[k]), float(ref_metrics[k]), rtol=2e-2)
  a = np.concatenate([np.ravel(x) for x in jax.tree.leaves(state.params)])
  b = np.concatenate([np.ravel(x) for x in jax.tree.leaves(ref_state.params)])
  assert np.mean(np.abs(a - b) > 1e-4) < 0.02
