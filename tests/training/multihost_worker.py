"""One process of the 2-process CPU run in test_multihost.py: argv = process_id port workdir steps."""
import os
import sys

if __name__ == "__main__":   # each host of the simulated cluster sees 4 CPU devices
  os.environ["JAX_PLATFORMS"] = "cpu"
  os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402

from sem_repa_jax.training import loop, mesh as mesh_lib  # noqa: E402
from sem_repa_jax.training.checkpoint import Checkpointer  # noqa: E402
from sem_repa_jax.training.metrics import MetricsWriter  # noqa: E402
from tests.training import toy  # noqa: E402

def main(process_id, port, workdir, steps):
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.config.update("jax_default_matmul_precision", "highest")
  import orbax.checkpoint as ocp   # as tests/training/conftest.py: no per-replica slice compiles
  ocp.type_handlers.register_type_handler(
      jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=False), override=True)
  cfg = toy.config((2, 4, 1), workdir)
  cfg.distributed.initialize = True
  cfg.distributed.coordinator_address = f"localhost:{port}"
  cfg.distributed.num_processes = 2
  cfg.distributed.process_id = process_id
  mesh_lib.initialize_distributed(cfg)
  assert (jax.process_count(), jax.device_count(), jax.local_device_count()) == (2, 8, 4)
  mesh, rules, abstract, init, step_fn = toy.setup(cfg)
  data = toy.dataset(8, shard_index=process_id, shard_count=2)   # this host's half of each batch
  ckpt = Checkpointer(workdir, cfg)
  state, start = ckpt.restore_or(abstract, init, data)
  writer = MetricsWriter(workdir, start)
  state = loop.train(state, step_fn, data, mesh=mesh, rules=rules, start_step=start,
                     num_steps=steps, checkpointer=ckpt, writer=writer, config=cfg)
  ckpt.close()
  writer.close()
  params = multihost_utils.process_allgather(state.params, tiled=True)
  if process_id == 0:
    flat = {jax.tree_util.keystr(p): np.asarray(x)
            for p, x in jax.tree_util.tree_flatten_with_path(params)[0]}
    np.savez(os.path.join(workdir, "params.npz"), **flat)
  jax.distributed.shutdown()


if __name__ == "__main__":
  main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
