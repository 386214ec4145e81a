"""benchmarks/gpu_suite.py --smoke on CPU: the same code the GPU run takes, at tiny shapes.

The fast test runs a subset (`--only`): the measured matmul peak, the CogVideoX transformer entry
(TFLOP/s and % of that peak), the SVD U-Net entry, and an entry whose module does not exist. The rest of the smoke (VAE decode,
sampling and train steps: minutes on a loaded 2-core machine) runs in the slow test.
"""
import json

import pytest

from benchmarks import gpu_suite


def _run(tmp_path, *argv):
  out = tmp_path / "suite.json"
  gpu_suite.main(["--smoke", "--out", str(out), *argv])
  return json.loads(out.read_text())


def test_smoke_subset_measures_peak_and_percent_of_it(tmp_path):
  res = _run(tmp_path, "--only", "matmul_peak,cogvideox_transformer,svd_unet")
  r = res["results"]
  assert res["smoke"] and "load_average" in res["machine"]
  assert r["matmul_peak"]["status"] == "ok" and r["matmul_peak"]["tflops"] > 0
  fwd = r["cogvideox_transformer"]
  assert fwd["status"] == "ok", fwd.get("traceback")
  assert fwd["tokens"] == 2 * 4 * 4 + 8 and fwd["model_flops"] > 0   # 2x8x8 latents, 2x2 patches
  assert fwd["pct_of_matmul_peak"] == pytest.approx(100 * fwd["tflops"] / r["matmul_peak"]["tflops"])
  assert fwd["forward"]["n"] == 2 and fwd["forward"]["median_s"] > 0
  assert r["svd_unet"]["status"] == "ok", r["svd_unet"].get("traceback")


def _with_missing_entry(monkeypatch):
  monkeypatch.setattr(gpu_suite, "MODULE_ENTRIES", gpu_suite.MODULE_ENTRIES + ("no_such_bench",))
  monkeypatch.setattr(gpu_suite, "ENTRIES", gpu_suite.ENTRIES + ("no_such_bench",))


def test_a_missing_module_is_not_available(tmp_path, monkeypatch):
  _with_missing_entry(monkeypatch)
  r = _run(tmp_path, "--only", "no_such_bench")["results"]
  assert r["no_such_bench"] == {"status": "not available",
                                "reason": "no module benchmarks/no_such_bench.py",
                                "wall_s": r["no_such_bench"]["wall_s"]}


def test_a_failing_entry_is_recorded_and_the_rest_run(tmp_path, monkeypatch):
  def broken(smoke):
    raise RuntimeError("no device memory")
  monkeypatch.setattr(gpu_suite, "matmul_peak", broken)
  _with_missing_entry(monkeypatch)
  r = _run(tmp_path, "--only", "matmul_peak,no_such_bench")["results"]
  assert r["matmul_peak"]["status"] == "error"
  assert r["matmul_peak"]["error"] == "RuntimeError: no device memory"
  assert r["no_such_bench"]["status"] == "not available"


def test_budget_skips_entries_not_started(tmp_path):
  r = _run(tmp_path, "--only", "svd_unet,matmul_peak", "--budget-s", "-1")["results"]
  assert all(row["status"] == "skipped" for row in r.values())


def test_unknown_entry_is_a_usage_error(tmp_path):
  with pytest.raises(SystemExit):
    _run(tmp_path, "--only", "matmul_peek")


# Entries with a smoke test of their own (the subset above, tests/benchmarks/test_hjb.py and
# test_train_animator.py, test_train_vividpose.py) are not run twice; matmul_peak stays, as the train step's MFU is a
# percent of it.
COVERED_ELSEWHERE = ("cogvideox_transformer", "svd_unet", "hjb", "train_animator",
                     "train_vividpose")


@pytest.mark.slow
def test_full_smoke_every_entry_runs(tmp_path):
  rest = [e for e in gpu_suite.ENTRIES if e not in COVERED_ELSEWHERE]
  r = _run(tmp_path, "--only", ",".join(rest))["results"]
  assert sorted(r) == sorted(rest)
  for name in rest:
    assert r[name]["status"] == "ok", (name, r[name].get("traceback"))
  assert r["cogvideox_vae"]["compiled_bytes"] > 0
  assert r["train_step"]["JAX backbone (L_t)"]["mfu_pct_of_matmul_peak"] > 0
  assert r["sample_cogvideox"]["max_abs_diff"] < 1e-3
