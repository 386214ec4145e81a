"""One process of the 2-process CPU run in test_multihost.py: argv = process_id port workdir steps."""
import os
import sys

if __name__ == "__main__":   # each host of the simulated cluster sees 4 CPU devices
  os.environ["JAX_PLATFORMS"] = "cpu"
  os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"

import jax  # noqa: E402

from sem_repa_jax.training import loop  # noqa: E402
from sem_repa_jax.training.checkpoint import Checkpointer  # noqa: E402
from sem_repa_jax.training.metrics import MetricsWriter  # noqa: E402
from tests.processes import join_cluster, save_gathered_params  # noqa: E402
from tests.training import toy  # noqa: E402


def main(process_id, port, workdir, steps):
  cfg = toy.config((2, 4, 1), workdir)
  join_cluster(cfg, process_id, port)
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
  save_gathered_params(state.params, workdir)


if __name__ == "__main__":
  main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
