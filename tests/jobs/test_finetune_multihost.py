"""Stage 2 on two jax.distributed processes (CPU, gloo, 4 devices each; fsdp=2 across them, data=4
inside each), each reading its own shard of the records, equals stage 2 on one 8-device process
(data=2 x fsdp=4) fed the same global batches; the checkpoint both processes wrote restores there."""
import os

import grain
import jax
import numpy as np
from flax import traverse_util

from sem_repa_jax.jobs import _semrepa, finetune
from sem_repa_jax.models import load_pretrained
from sem_repa_jax.training.checkpoint import Checkpointer
from tests.jobs.semrepa_setup import stage2_config
from tests.processes import flat_arrays, free_port, run_workers

STEPS = 3

def _global_batches(config, num_processes=2):
  """The global batches of a run on `num_processes` hosts: each step, host 0's batch of its shard
  of the records, then host 1's (the order shard_batch assembles them in)."""
  parts = [_semrepa.record_dataset(config, shard_index=i, shard_count=num_processes)
           for i in range(num_processes)]

  def batch(i):
    halves = [p[i] for p in parts]
    return {k: np.concatenate([h[k] for h in halves]) for k in halves[0]}
  return grain.MapDataset.range(STEPS).map(batch)


def test_two_processes_match_one_process_with_eight_devices(records, stage1, tmp_path):
  align_dir = os.path.join(stage1, _semrepa.ALIGNMENT_DIRNAME)
  multi_dir = tmp_path / "multi"
  port = free_port()
  run_workers("tests/jobs/finetune_multihost_worker.py",
              lambda i: (i, port, multi_dir, records, align_dir, STEPS))

  # The same job on this process's 8 devices, fed the 2-host global batches.
  c = stage2_config(records, tmp_path / "single", align_dir, STEPS)
  state = finetune.run(c, dataset=_global_batches(c))
  single = flat_arrays(state.params)
  multi = np.load(multi_dir / "params.npz")
  assert set(single) == set(multi.files)
  errors = {k: float(np.max(np.abs(multi[k] - single[k]))) for k in single}
  print("max |multi - single| over parameters:", max(errors.values()))
  for k in single:
    np.testing.assert_allclose(multi[k], single[k], rtol=0, atol=1e-6, err_msg=k)
  # The checkpoint both hosts wrote together restores here, on one host, into 8 devices.
  ckpt = Checkpointer(multi_dir)
  assert ckpt.latest_step() == STEPS
  data_files = sorted(f for f in os.listdir(os.path.join(ckpt.directory, str(STEPS), "data"))
                      if f.endswith(".json"))
  assert data_files == ["process_0-of-2.json", "process_1-of-2.json"]
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                          state)
  restored = ckpt.restore(abstract)
  for k, x in flat_arrays(restored.params).items():
    np.testing.assert_array_equal(x, multi[k])
  # The frozen alignment modules are exactly stage 1's export.
  _, exported = load_pretrained(align_dir)
  frozen = traverse_util.flatten_dict(jax.device_get(restored.frozen), sep="/")
  exported = traverse_util.flatten_dict(exported, sep="/")
  assert set(frozen) == set(exported)
  for k, v in exported.items():
    np.testing.assert_array_equal(np.asarray(frozen[k]), np.asarray(v))
