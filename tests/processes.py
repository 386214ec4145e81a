"""Starting the processes of a simulated multi-host run (tests/training, tests/jobs)."""
import os
import socket
import subprocess
import sys

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
