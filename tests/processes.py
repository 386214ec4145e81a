"""Starting the processes of a simulated multi-host run (tests/training, tests/jobs)."""
import os
import socket
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def run_workers(worker: str, args_of, num_processes: int = 2, timeout: float = 240) -> None:
  """Runs `python worker *args_of(i)` for i < num_processes at once, from the repository root with
  a clean JAX environment (each worker sets its own device count), and asserts every one exits 0,
  showing the tail of a failing worker's output."""
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
  env["PYTHONPATH"] = ROOT
  procs = [subprocess.Popen([sys.executable, os.path.join(ROOT, worker), *map(str, args_of(i))],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
           for i in range(num_processes)]
  try:
    outs = [p.communicate(timeout=timeout)[0].decode() for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for i, (p, out) in enumerate(zip(procs, outs)):
    assert p.returncode == 0, f"process {i} of {worker} exited {p.returncode}:\n{out[-3000:]}"


# --- inside a worker (after it has set JAX_PLATFORMS / XLA_FLAGS and before it touches devices) ---
def join_cluster(cfg, process_id: int, port: int, num_processes: int = 2) -> None:
  """Makes this process host `process_id` of a localhost CPU cluster (gloo collectives) with the
  tests' numerics, through the config fields a real launch sets."""
  import jax
  import orbax.checkpoint as ocp
  from sem_repa_jax.training import mesh as mesh_lib
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.config.update("jax_default_matmul_precision", "highest")
  # As tests/training/conftest.py: no per-replica slice compiles.
  ocp.type_handlers.register_type_handler(
      jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=False), override=True)
  cfg.distributed.initialize = True
  cfg.distributed.coordinator_address = f"localhost:{port}"
  cfg.distributed.num_processes = num_processes
  cfg.distributed.process_id = process_id
  mesh_lib.initialize_distributed(cfg)
  assert jax.process_count() == num_processes, jax.process_count()


def flat_arrays(tree) -> dict:
  """{keystr path: host array} of a pytree (fully addressable or already gathered)."""
  import jax
  return {jax.tree_util.keystr(p): np.asarray(x)
          for p, x in jax.tree_util.tree_flatten_with_path(jax.device_get(tree))[0]}


def save_gathered_params(params, workdir) -> None:
  """Gathers the sharded params on every process (a collective) and process 0 writes
  <workdir>/params.npz for the test process to compare; then leaves the cluster."""
  import jax
  from jax.experimental import multihost_utils
  gathered = multihost_utils.process_allgather(params, tiled=True)
  if jax.process_index() == 0:
    np.savez(os.path.join(workdir, "params.npz"), **flat_arrays(gathered))
  jax.distributed.shutdown()
