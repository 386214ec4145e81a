"""Every GPU figure of the project in one call: one JSON and one table, sized for 8 minutes on one
H100/H200 (GPU time comes in minutes, so the whole suite must be known to work before a GPU is
there: `--smoke` runs the same code at tiny shapes on CPU, and the tests run it).

  ./run.sh bench gpu_suite --out gpu.json               # on the GPU machine
  ./run.sh bench gpu_suite --smoke --out smoke.json     # anywhere, tiny shapes, about a minute
  ./run.sh bench gpu_suite --only matmul_peak,cogvideox_vae --out some.json

Entries, in this order (the device's peak-bytes counter never goes down, so the VAE's peak
memory is taken before the large models run):
  matmul_peak            bf16 matmul TFLOP/s measured on this device (8192^3, 10 chained per call)
  cogvideox_vae          49x480x720 CogVideoX-5b-I2V VAE decode: peak memory (and first-call time)
  cogvideox_transformer  CogVideoX-5b forward at 17,776 tokens, cudnn attention: TFLOP/s, % of peak
  sample_cogvideox       5b-I2V 50-step CFG sampling, ours vs diffusers, extrapolated from 3 steps
  train_step             stage-2 backbone step at 2b 49x480x720 vs the PyTorch step: time, MFU
  svd_unet, svd_vae, sample_svd   when their modules exist ("not available" in the JSON until then)
  train_animator         StableAnimator step at 16x512x512 vs the PyTorch step, 16x576x1024 JAX
                         alone (bf16, remat): time, MFU, compiled memory per device
  train_vividpose        VividPose step at 14x768x512 vs the SVD U-Net step + one ReferenceNet
                         forward (bf16, remat): seconds and the ratio (target 1.4x)
  hjb                    StableAnimator's HJB face step (SVD VAE + iresnet100, remat) at 16x512x512
                         and 16x576x1024, fp32: seconds and compiled bytes per device
Each entry is `benchmarks/<name>.py: suite_entry(smoke: bool) -> dict`. Each runs inside a
try/except that records the error, so one failure keeps the others; once --budget-s seconds have
passed, the remaining entries are recorded as skipped. The JSON is rewritten after every entry,
so a run cut short keeps what it measured.
"""
import argparse
import importlib
import importlib.util
import os
import sys
import time
import traceback

# JAX would take 75% of the GPU up front and leave the PyTorch references too little.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import harness  # noqa: E402

MODULE_ENTRIES = ("cogvideox_vae", "cogvideox_transformer", "sample_cogvideox", "train_step",
                  "svd_unet", "svd_vae", "sample_svd", "train_animator", "train_vividpose", "hjb")
ENTRIES = ("matmul_peak",) + MODULE_ENTRIES
BUDGET_S = 480


def matmul_peak(smoke: bool) -> dict:
  """bf16 matmul TFLOP/s on this device: n^3 products, 10 chained in one jitted call so dispatch
  does not count; random operands (zeros run faster than real data on Hopper)."""
  import jax
  import jax.numpy as jnp
  n, chain = (256, 2) if smoke else (8192, 10)
  ka, kb = jax.random.split(jax.random.key(0))
  a = jax.random.normal(ka, (n, n), jnp.bfloat16)
  b = (jax.random.normal(kb, (n, n), jnp.float32) * n ** -0.5).astype(jnp.bfloat16)  # norms stay ~1

  @jax.jit
  def chained(a, b):
    return jax.lax.fori_loop(0, chain, lambda _, x: x @ b, a)

  t = harness.alternate({"matmul": lambda: chained(a, b)}, repeats=3 if smoke else 10)["matmul"]
  flops = 2.0 * n ** 3 * chain
  return {"n": n, "chained": chain, "dtype": "bfloat16", "timing": t,
          "tflops": flops / t.median / 1e12, "tflops_best": flops / t.min / 1e12,
          "device": str(jax.devices()[0].device_kind)}


def _entry_fn(name: str):
  """The entry's function, or the reason it is not available."""
  if name == "matmul_peak":
    return matmul_peak, None
  if importlib.util.find_spec(f"benchmarks.{name}") is None:
    return None, f"no module benchmarks/{name}.py"
  fn = getattr(importlib.import_module(f"benchmarks.{name}"), "suite_entry", None)
  return fn, None if fn else f"benchmarks/{name}.py has no suite_entry"


def run_entry(name: str, smoke: bool) -> dict:
  """One entry's figures with its status: ok, error (message and traceback tail), not available."""
  t0 = time.perf_counter()
  try:
    fn, reason = _entry_fn(name)
    row = {"status": "not available", "reason": reason} if fn is None else {"status": "ok",
                                                                            **fn(smoke)}
  except Exception as e:   # recorded, so that one failure does not lose the other entries
    row = {"status": "error", "error": f"{type(e).__name__}: {e}"[:2000],
           "traceback": traceback.format_exc()[-4000:]}
  row["wall_s"] = time.perf_counter() - t0
  return row


def derived(results: dict) -> None:
  """Percent of the measured matmul peak for the entries that report TFLOP/s."""
  peak = results.get("matmul_peak", {}).get("tflops")
  if not peak:
    return
  fwd = results.get("cogvideox_transformer", {})
  if "tflops" in fwd:
    fwd["pct_of_matmul_peak"] = 100 * fwd["tflops"] / peak
  for entry in ("train_step", "train_animator"):   # one row per step kind
    for row in results.get(entry, {}).values():
      if isinstance(row, dict) and "tflops" in row:
        row["mfu_pct_of_matmul_peak"] = 100 * row["tflops"] / peak


# What the table shows of each entry, where present.
HEADLINES = ("tflops", "pct_of_matmul_peak", "peak_gib", "compiled_bytes", "ratio_jax_over_diffusers",
             "ratio_diffusers_over_ours", "ratio_vividpose_over_svd_plus_reference",
             "s_per_step_ours", "ours_sampling_s", "extrapolated_to_50_steps")


def _headline(row: dict) -> str:
  if row["status"] != "ok":
    return row.get("reason") or row.get("error", "")[:70]
  parts = []
  for k in HEADLINES:
    v = row.get(k)
    if isinstance(v, dict):
      v = ", ".join(f"{a} {b:.3g}" for a, b in v.items() if isinstance(b, float))
      parts.append(f"50 steps: {v}")
    elif isinstance(v, (int, float)):
      parts.append(f"{k} {v:.4g}")
  for k, v in row.items():   # train_step, train_animator: one row per step kind
    if isinstance(v, dict) and "mfu_pct_of_matmul_peak" in v:
      parts.append(f"{k.split(' (')[0]} MFU {v['mfu_pct_of_matmul_peak']:.1f}%")
  return "; ".join(parts)


def table(results: dict) -> str:
  lines = [f"{'entry':<24} {'status':<14} {'wall s':>8}  figures"]
  for name, row in results.items():
    lines.append(f"{name:<24} {row['status']:<14} {row.get('wall_s', 0):>8.1f}  {_headline(row)}")
  lines.append(harness.load_line())
  return "\n".join(lines)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--out", required=True, help="JSON file to write (rewritten after each entry)")
  p.add_argument("--smoke", action="store_true", help="tiny shapes, any backend (CPU in the tests)")
  p.add_argument("--only", default="", help=f"comma-separated subset of {','.join(ENTRIES)}")
  p.add_argument("--budget-s", type=float, default=BUDGET_S,
                 help="entries not started by then are recorded as skipped")
  args = p.parse_args(argv)
  names = [n for n in args.only.split(",") if n] or list(ENTRIES)
  unknown = [n for n in names if n not in ENTRIES]
  if unknown:
    p.error(f"--only: unknown entries {unknown}; expected some of {','.join(ENTRIES)}")

  import jax
  if not args.smoke and jax.default_backend() != "gpu":
    p.error(f"the full suite is sized for one H100/H200; JAX's backend here is "
            f"{jax.default_backend()!r} (use --smoke for the tiny shapes)")
  start, results = time.perf_counter(), {}
  payload = {"smoke": args.smoke, "backend": jax.default_backend(), "budget_s": args.budget_s,
             "results": results}
  for name in names:
    if time.perf_counter() - start > args.budget_s:
      results[name] = {"status": "skipped", "reason": f"budget of {args.budget_s:.0f} s spent"}
    else:
      print(f"[gpu_suite] {name} ...", flush=True)
      results[name] = run_entry(name, args.smoke)
      if results[name]["status"] == "error":
        print(results[name]["traceback"], file=sys.stderr)
    derived(results)
    payload["total_s"] = time.perf_counter() - start
    harness.write_json(args.out, payload)
  print(table(results))
  print(f"wrote {args.out}")
  return payload


if __name__ == "__main__":
  main()
