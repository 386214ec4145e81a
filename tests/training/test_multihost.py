import os

import numpy as np
import pytest

from sem_repa_jax.training import loop
from sem_repa_jax.training.checkpoint import Checkpointer
from tests.processes import flat_arrays, free_port, run_workers
from tests.training import toy

pytestmark = pytest.mark.slow   # two processes, each compiling the training step

STEPS = 3    # as multihost_worker.STEPS (not imported: it sets up a 4-device process)


class Concat:
  """The global batch a 2-host run sees: host 0's half, then host 1's."""

  def __init__(self):
    self.parts = [toy.dataset(8, shard_index=i, shard_count=2) for i in range(2)]

  def __next__(self):
    halves = [next(p) for p in self.parts]
    return {k: np.concatenate([h[k] for h in halves]) for k in halves[0]}


def test_two_processes_match_one_process_with_eight_devices(tmp_path):
  port = free_port()
  run_workers("tests/training/multihost_worker.py", lambda i: (i, port, tmp_path, STEPS))

  # The same job on this process's 8 devices, fed the concatenated batches.
  cfg = toy.config((2, 4, 1), tmp_path / "single")
  mesh, rules, abstract, init, step_fn = toy.setup(cfg)
  state = loop.train(init(), step_fn, Concat(), mesh=mesh, rules=rules, start_step=0,
                     num_steps=STEPS, log_every=STEPS, checkpoint_every=0, progress_bar=False)
  multi = np.load(tmp_path / "params.npz")
  flat = flat_arrays(state.params)
  assert set(flat) == set(multi.files)
  for k in flat:
    np.testing.assert_allclose(multi[k], flat[k], rtol=0, atol=1e-6, err_msg=k)

  # The checkpoint both hosts wrote together restores here, on one host, into 8 devices.
  ckpt = Checkpointer(tmp_path)
  assert ckpt.latest_step() == STEPS
  data_files = sorted(f for f in os.listdir(os.path.join(ckpt.directory, str(STEPS), "data")) if f.endswith(".json"))
  assert data_files == ["process_0-of-2.json", "process_1-of-2.json"]
  restored = ckpt.restore(abstract)
  for k, x in flat_arrays(restored.params).items():
    np.testing.assert_array_equal(x, multi[k])
