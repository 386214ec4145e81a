import os
import subprocess
import sys

import jax
import numpy as np

from sem_repa_jax.training import sharding
from sem_repa_jax.training.checkpoint import Checkpointer
from sem_repa_jax.training.train_state import shardings_of
from tests.training import toy

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _assert_equal(a, b):
  # Paths, not treedefs: two TrainStates built separately hold different (static) optimizers.
  pa, pb = jax.tree_util.tree_flatten_with_path(a)[0], jax.tree_util.tree_flatten_with_path(b)[0]
  assert [jax.tree_util.keystr(k) for k, _ in pa] == [jax.tree_util.keystr(k) for k, _ in pb]
  for (_, x), (_, y) in zip(pa, pb):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_then_restore_on_another_mesh(tmp_path):
  cfg = toy.config((2, 4, 1), tmp_path, moments_dtype="int8", min_quantized_size=256,
                   block_size=64)
  mesh, rules, abstract, init, step_fn = toy.setup(cfg, frozen_prefixes=("params/head",),
                                                   ema_decay=0.9)
  state, data = init(), toy.dataset(16)
  kernel = state.params["params"]["Dense_0"]["kernel"]
  codes = state.opt_state[1].mu["params"]["Dense_0"]["kernel"]
  assert codes.codes.dtype == np.uint8 and codes.codes.sharding == kernel.sharding
  for _ in range(2):
    state, _ = step_fn(state, sharding.shard_batch(next(data), mesh, rules))
  ckpt = Checkpointer(tmp_path, cfg)
  ckpt.save(2, state, data)
  expected_next = next(data)          # the live iterator moves on while the save runs
  ckpt.wait()
  assert ckpt.latest_step() == 2
  assert ckpt.saved_config()["mesh"]["shape"] == [2, 4, 1]

  fresh_data = toy.dataset(16)
  restored, step = ckpt.restore_or(abstract, init, fresh_data)
  assert step == 2
  _assert_equal(restored, state)
  assert shardings_of(restored) == shardings_of(abstract)
  _assert_equal(next(fresh_data), expected_next)
  assert restored.ema is not None and "head" in restored.frozen["params"]

  # Same checkpoint onto a (4, 1, 2) mesh: mlp now split over 'tensor', embed unsplit.
  cfg2 = toy.config((4, 1, 2), tmp_path, moments_dtype="int8", min_quantized_size=256,
                    block_size=64)
  _, _, abstract2, init2, _ = toy.setup(cfg2, frozen_prefixes=("params/head",), ema_decay=0.9)
  other = Checkpointer(tmp_path, cfg2).restore(abstract2)
  _assert_equal(other, state)
  assert shardings_of(other) == shardings_of(abstract2)
  kernel = other.params["params"]["Dense_0"]["kernel"]
  assert {s.data.shape for s in kernel.addressable_shards} == {(16, 16)}


def test_partial_save_is_ignored(tmp_path):
  tree = {"w": np.arange(6, dtype=np.float32)}
  ckpt = Checkpointer(tmp_path, keep=2, async_save=False)
  for step in (1, 2, 3):
    ckpt.save(step, {"w": tree["w"] + step})
  ckpt.wait()
  assert sorted(int(d) for d in os.listdir(ckpt.directory) if d.isdigit()) == [2, 3]  # keep=2
  # What a crash in the middle of writing step 4 leaves behind.
  partial = os.path.join(ckpt.directory, "4.orbax-checkpoint-tmp-123456")
  os.makedirs(os.path.join(partial, "state"))
  with open(os.path.join(partial, "state", "garbage"), "wb") as f:
    f.write(b"\0" * 10)
  again = Checkpointer(tmp_path, keep=2)
  assert again.latest_step() == 3
  abstract = {"w": jax.ShapeDtypeStruct((6,), np.float32,
                                        sharding=jax.sharding.SingleDeviceSharding(jax.devices()[0]))}
  np.testing.assert_array_equal(again.restore(abstract)["w"], tree["w"] + 3)


CRASHING_SAVER = r"""
import os, signal, sys
sys.path.insert(0, os.getcwd())
import numpy as np
from sem_repa_jax.training.checkpoint import Checkpointer
ckpt = Checkpointer(sys.argv[1], keep=3, async_save=True)
big = np.ones((2048, 2048), np.float32)
ckpt.save(1, {"w": big * 1})
ckpt.wait()
ckpt.save(2, {"w": big * 2})      # async: returns while the bytes are still being written
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_killed_during_async_save_keeps_previous_step(tmp_path):
  r = subprocess.run([sys.executable, "-c", CRASHING_SAVER, str(tmp_path)], cwd=ROOT,
                     env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True, timeout=120)
  assert r.returncode == -9, r.stderr.decode()[-2000:]
  ckpt = Checkpointer(tmp_path)
  step = ckpt.latest_step()
  names = os.listdir(ckpt.directory)
  leftovers = [d for d in names if "tmp" in d]
  # The kill lands before step 2's write starts (nothing of it left), during it (only a tmp dir
  # is left, never a step directory) or, rarely, just after its commit (no tmp dir left).
  assert step in (1, 2), (step, names)
  assert sorted(d for d in names if d.isdigit()) == [str(s) for s in range(1, step + 1)], names
  assert step == 1 or not leftovers, (step, leftovers)
  abstract = {"w": jax.ShapeDtypeStruct((2048, 2048), np.float32,
                                        sharding=jax.sharding.SingleDeviceSharding(jax.devices()[0]))}
  w = np.asarray(ckpt.restore(abstract)["w"])
  assert np.all(w == step)


def test_resuming_after_a_model_change_names_every_array_that_differs(tmp_path):
  import jax
  import jax.numpy as jnp
  import pytest
  from sem_repa_jax.training.checkpoint import Checkpointer
  ckpt = Checkpointer(str(tmp_path), keep=2, async_save=False)
  ckpt.save(3, {"params": {"dense": {"kernel": jnp.ones((2, 3))}, "old": jnp.zeros(2)},
                "step": jnp.array(3)})
  ckpt.wait()
  changed = jax.eval_shape(lambda: {"params": {"dense": {"kernel": jnp.ones((2, 4))},
                                               "new": jnp.zeros(5)}, "step": jnp.array(0)})
  with pytest.raises(ValueError) as e:
    ckpt.restore(changed)
  msg = str(e.value)
  assert "3 does not fit this run's model (3 arrays differ" in msg
  assert "params/dense/kernel: saved (2, 3), this run (2, 4)" in msg
  assert "params/new: not in the checkpoint" in msg and "params/old: saved, not in this run" in msg
  ckpt.close()
