"""benchmarks/train_animator.py at the tiny size on CPU: the job's JAX step and the official
PyTorch step run end to end on the same converted weights and draws, give the same step-0 loss,
and report their figures.

The test runs the benchmark's command line in a fresh process with XLA's backend optimizations off
(a third of the compile time, as the model tests' FAST_COMPILE); the suite's smoke entry, with the
fsdp-8 memory analysis on the 8 simulated devices, is checked in tests/benchmarks/test_gpu_suite.py
(the whole smoke, one run for every entry).
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
  out = tmp_path / "figures.json"
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
  env.update(PYTHONPATH=ROOT, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_backend_optimization_level=0")
  proc = subprocess.run([sys.executable, os.path.join("benchmarks", "train_animator.py"), "--size",
                         "tiny", "--repeats", "1", "--no-fsdp8", "--json", str(out)],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  f = json.loads(out.read_text())
  assert f["same_weights"]
  np.testing.assert_allclose(f["loss_step0_jax"], f["loss_step0_torch"], rtol=1e-4)
  for side in ("jax", "torch"):
    assert f[side]["n"] == 1 and _positive(f[side]["median_s"]) and _positive(f[side]["tflops"])
  assert _positive(f["ratio_jax_over_diffusers"]) and isinstance(f["loaded"], bool)
  assert _positive(f["model_flops"]) and _positive(f["compiled_flops"])
  assert _positive(f["compile_s"])
  assert _positive(f["memory"]["total_bytes"]) and _positive(f["memory"]["temp_bytes"])
  assert len(f["machine"]["load_average"]) == 3
  assert "fsdp8_memory" not in f
