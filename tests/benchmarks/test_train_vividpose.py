"""benchmarks/train_vividpose.py at the tiny size on CPU through the GPU suite's entry
(`gpu_suite.py --smoke --only train_vividpose`, the code path of the GPU run), in a fresh process
with XLA's backend optimizations off: the three timed calls (VividPose step, SVD U-Net step,
ReferenceNet forward) run and the ratio is reported; tests/benchmarks/test_gpu_suite.py does not
run the entry again."""
import json
import math
import os
import subprocess
import sys

from tests.processes import ROOT


def _positive(x) -> bool:
  return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_tiny_entry_times_the_three_calls_and_reports_the_ratio(tmp_path):
  out = tmp_path / "suite.json"
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
  env.update(PYTHONPATH=ROOT, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_backend_optimization_level=0")
  proc = subprocess.run([sys.executable, os.path.join("benchmarks", "gpu_suite.py"), "--smoke",
                         "--only", "train_vividpose", "--out", str(out)],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  row = json.loads(out.read_text())["results"]["train_vividpose"]
  assert row["status"] == "ok", row.get("traceback")
  for name in ("vividpose", "svd", "reference_net"):
    assert row[name]["n"] == 1 and _positive(row[name]["median_s"])
  assert _positive(row["ratio_vividpose_over_svd_plus_reference"]) and row["target"] == 1.4
  assert isinstance(row["loaded"], bool) and len(row["machine"]["load_average"]) == 3
  assert _positive(row["compile_s"])
