"""benchmarks/hjb.py through the GPU suite's --smoke path: the tiny config on CPU, JAX (with and
without remat) against the official torch loop."""
import json
import math

from benchmarks import gpu_suite

VARIANTS = ("jax", "jax_remat", "torch")


def test_smoke_figures_are_finite_and_jax_refines_x0_as_torch(tmp_path):
  out = tmp_path / "suite.json"
  gpu_suite.main(["--smoke", "--only", "hjb", "--out", str(out)])
  row = json.loads(out.read_text())["results"]["hjb"]
  assert row["status"] == "ok", row.get("traceback")
  for name in VARIANTS:
    t = row["timings"][name]
    assert t["n"] == 2 and math.isfinite(t["median_s"]) and t["median_s"] > 0
    assert math.isfinite(row["peak_rss_growth_mib"][name]) and row["peak_rss_growth_mib"][name] >= 0
  for name in VARIANTS[:2]:
    m = row["compiled_memory"][name]
    assert m["total_bytes"] > 0 and m["temp_bytes"] > 0 and m["argument_bytes"] > 0
    assert row["timings"][f"ratio_{name}_over_torch"] > 0
    # Adam eps 1e-6 (benchmarks/hjb.py): every element of z well-conditioned, as in
    # tests/diffusion/test_hjb.py; the losses agree before Adam's division amplifies rounding.
    assert row[f"max_abs_z_error_{name}"] <= 1e-4
    assert row[f"max_abs_loss_error_{name}"] <= 1e-5
  assert row["z_moved"] > 0.05                      # Adam's steps of ~lr: the loop did move z
  assert all(math.isfinite(x) for x in row["losses_torch"])
