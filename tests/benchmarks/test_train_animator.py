"""benchmarks/train_animator.py at the tiny size on CPU: the job's JAX step and the official
PyTorch step run end to end on the same converted weights and draws, give the same step-0 loss,
and report their figures.

The test runs the GPU suite's entry (`gpu_suite.py --smoke --only matmul_peak,train_animator`, the
code path of the GPU run) in a fresh process with XLA's backend optimizations off (a third of the
compile time, as the model tests' FAST_COMPILE) and 8 simulated devices for the fsdp-8 memory
analysis; tests/benchmarks/test_gpu_suite.py does not run the entry again.
"""
import json
import math
import os
import subprocess
import sys

import numpy as np

from tests.processes import ROOT


def _positive(x) -> bool:
  return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_tiny_step_matches_torch_and_reports_its_figures(tmp_path):
  out = tmp_path / "suite.json"
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
  env.update(PYTHONPATH=ROOT, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_backend_optimization_level=0 "
                       "--xla_force_host_platform_device_count=8")
  proc = subprocess.run([sys.executable, os.path.join("benchmarks", "gpu_suite.py"), "--smoke",
                         "--only", "matmul_peak,train_animator", "--out", str(out)],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  res = json.loads(out.read_text())
  row = res["results"]["train_animator"]
  assert row["status"] == "ok", row.get("traceback")
  f = row["tiny"]
  assert f["same_weights"]
  np.testing.assert_allclose(f["loss_step0_jax"], f["loss_step0_torch"], rtol=1e-4)
  for side in ("jax", "torch"):
    t = row[f"{side} {f['shape']}"]
    assert t["n"] == 1 and _positive(t["median_s"]) and _positive(t["tflops"])
    assert _positive(t["mfu_pct_of_matmul_peak"])
  assert _positive(f["ratio_jax_over_diffusers"]) and isinstance(f["loaded"], bool)
  assert _positive(f["model_flops"]) and _positive(f["compiled_flops"])
  assert _positive(f["compile_s"])
  assert _positive(f["memory"]["total_bytes"]) and _positive(f["memory"]["temp_bytes"])
  assert len(res["machine"]["load_average"]) == 3
  # The step compiled for the mesh (1, 8, 1) of the 8 simulated devices: memory per device.
  m = f["fsdp8_memory"]
  assert _positive(m["total_bytes"]) and _positive(m["argument_bytes"]), m
