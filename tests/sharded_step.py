"""One training step on a single device and on a mesh of the 8 simulated CPU devices, compared.

The jobs' sharding tests build their model, loss and batch and hand them here; what is checked is
that the mesh changes only the reduction order (loss and every parameter after the step agree).
"""
import jax
import numpy as np


def assert_mesh_step_matches_single_device(c, init_fn, init_args, loss_fn, batch, *, frozen,
                                           mesh_shape, atol, prepare=lambda state: state):
  from sem_repa_jax.training import loop, mesh as mesh_lib, optimizers, sharding
  from sem_repa_jax.training.train_state import make_train_state
  tx, schedule = optimizers.make_optimizer(c.optimizer)
  rules = sharding.axis_rules(c)
  results = []
  for shape, devices in (((1, 1, 1), jax.devices()[:1]), (mesh_shape, jax.devices())):
    c.mesh.shape = shape
    mesh = mesh_lib.make_mesh(c, devices=devices)
    abstract, init = make_train_state(init_fn, jax.random.key(0), *init_args, tx=tx, mesh=mesh,
                                      rules=rules, rng=1, frozen_prefixes=frozen)
    step = loop.compile_train_step(loop.make_train_step(loss_fn, schedule), abstract, mesh, rules)
    state, metrics = step(prepare(init()), sharding.shard_batch(batch, mesh, rules))
    results.append((jax.device_get(state.params), float(metrics["loss"])))
  np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-5)
  for x, y in zip(jax.tree.leaves(results[0][0]), jax.tree.leaves(results[1][0])):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol)
