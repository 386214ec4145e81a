"""One host of the 2-process CPU run in test_finetune_multihost.py: runs the stage-2 job as
`python -m sem_repa_jax.main` would on a cluster, on this process's shard of the records.

argv: process_id port workdir records alignment_dir steps
"""
import os
import sys

if __name__ == "__main__":   # each host of the simulated cluster sees 4 CPU devices
  os.environ["JAX_PLATFORMS"] = "cpu"
  # Unoptimized LLVM code: compiling dominates this short run (~25% less CPU, same numbers to 1e-7).
  os.environ["XLA_FLAGS"] = ("--xla_force_host_platform_device_count=4 "
                             "--xla_backend_optimization_level=0 "
                             "--xla_llvm_disable_expensive_passes=true")
  sys.modules["torch"] = None   # tensorboardX (metrics) imports torch if it can: seconds, unused

import jax  # noqa: E402

from sem_repa_jax import config_checks  # noqa: E402
from sem_repa_jax.jobs import finetune  # noqa: E402
from sem_repa_jax.main import write_resolved_config  # noqa: E402
from sem_repa_jax.training import mesh as mesh_lib  # noqa: E402
from tests.jobs.semrepa_setup import stage2_config  # noqa: E402
from tests.processes import join_cluster, save_gathered_params  # noqa: E402


def main(process_id, port, workdir, records, alignment_dir, steps):
  cfg = stage2_config(records, workdir, alignment_dir, steps)
  # fsdp across the two hosts (each holds half of every weight) and data inside each: mesh rows are
  # processes, so the fsdp axis comes first, and the batch is split over fsdp then data to keep
  # each process's rows of the global batch contiguous (process 0 rows 0-3, process 1 rows 4-7).
  cfg.mesh.axes = ("fsdp", "data", "tensor")
  cfg.logical_axis_rules = tuple((n, ("fsdp", "data") if n == "batch" else a)
                                 for n, a in cfg.logical_axis_rules)
  # What sem_repa_jax.main does before it runs the job.
  join_cluster(cfg, process_id, port)
  assert (jax.process_count(), jax.device_count(), jax.local_device_count()) == (2, 8, 4)
  config_checks.check_config(cfg, jax.device_count())
  if process_id == 0:
    write_resolved_config(cfg, workdir)
  mesh = mesh_lib.make_mesh(cfg)
  assert [{d.process_index for d in row.flat} for row in mesh.devices] == [{0}, {1}], mesh.devices
  state = finetune.run(cfg)
  # Every weight whose width is split is split between the hosts: no host holds all of it.
  embed = state.params["params"]["transformer"]["proj_out"]["kernel"]
  assert embed.sharding.spec[0] == "fsdp" and not embed.is_fully_addressable, embed.sharding
  save_gathered_params(state.params, workdir)


if __name__ == "__main__":
  main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6]))
