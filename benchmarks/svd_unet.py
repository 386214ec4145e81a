"""SVD U-Net forward: ours vs diffusers' UNetSpatioTemporalConditionModel, same random weights.

  python -m benchmarks.svd_unet --tiny        # CPU, seconds
  python -m benchmarks.svd_unet               # CPU, mid size (a minute or two)
  python -m benchmarks.svd_unet --xt          # SVD-XT shapes, bf16 (a GPU)
  [--threads N]: CPU threads of torch and XLA (default 1; 0: the libraries' defaults)

One forward of the classifier-free-guidance batch (2 x frames latents of 8 channels, as the
pipeline calls it each step), timed with benchmarks/harness.py (A B A B, medians); ours jitted,
after compilation (compile time reported apart). The diffusers model is converted by our
converter, so the outputs are compared too. `suite_entry(smoke)` is the GPU suite's hook.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import svd_models  # noqa: E402

if __name__ == "__main__":
  THREADS = svd_models.threads_from_argv(sys.argv)   # before jax is imported

from benchmarks import harness  # noqa: E402


def run(size_name: str, dtype: str = "float32", repeats: int = 3, batch: int = 2,
        threads: int = 1) -> dict:
  import jax
  import jax.numpy as jnp
  import numpy as np
  import torch
  svd_models.set_torch_threads(threads)
  size = svd_models.SIZES[size_name]
  ref = svd_models.torch_model("unet", size)
  module, variables = svd_models.convert("unet", ref, dtype, svd_models.default_attention())
  ref, device = svd_models.torch_device(ref, dtype)
  cfg = module.config
  s = svd_models.spatial_compression(size)
  shape = (batch, size.frames, size.height // s, size.width // s, cfg.in_channels)
  sample = svd_models.rng_inputs(shape)
  c_noise = np.full((batch,), 0.25 * np.log(20.0), np.float32)
  context = svd_models.rng_inputs((batch, 1, cfg.cross_attention_dim[0]), 1)
  ids = np.tile(np.array([[6.0, 127.0, 0.02]], np.float32), (batch, 1))
  args = [jnp.asarray(a, dtype) for a in (sample, c_noise, context, ids)]
  fwd = jax.jit(module.apply)
  t0 = time.perf_counter()
  out = np.asarray(jax.block_until_ready(fwd(variables, *args)), np.float32)
  compile_s = time.perf_counter() - t0
  fns = {"jax": lambda: fwd(variables, *args)}
  figures = {}
  if device == "cuda" or jax.default_backend() == "cpu":
    tt = lambda a: torch.from_numpy(a).to(device, getattr(torch, dtype))
    t_args = (tt(sample).permute(0, 1, 4, 2, 3), tt(c_noise), tt(context), tt(ids))

    def torch_forward():
      with torch.no_grad():
        y = ref(*t_args).sample
      svd_models.sync(device)
      return y
    want = torch_forward().float().permute(0, 1, 3, 4, 2).cpu().numpy()
    figures["max_abs_error"] = float(np.abs(out - want).max())
    figures["output_max"] = float(np.abs(want).max())
    fns["diffusers"] = torch_forward
  else:
    figures["diffusers"] = "not run: torch has no CUDA device here"
  res = harness.alternate(fns, repeats=repeats)
  print(harness.table(res, baseline="diffusers" if "diffusers" in res else None,
                      title=f"SVD U-Net forward, size {size_name}, {shape} {dtype}, "
                            f"{jax.devices()[0].platform}"))
  print(f"  ours: compile + first call {compile_s:.2f} s; "
        + (f"max abs error vs diffusers {figures['max_abs_error']:.2e} (output max "
           f"{figures['output_max']:.2f})" if "max_abs_error" in figures else figures["diffusers"]))
  return dict(benchmark="svd_unet", size=size_name, dtype=dtype, input_shape=list(shape),
              compile_s=compile_s, timings=svd_models.timing_figures(res), **figures)


def suite_entry(smoke: bool) -> dict:
  """smoke: the tiny config on CPU-sized shapes, float32; else SVD-XT shapes (2 x 25 x 72 x 128
  latents), bf16."""
  return run("tiny", "float32", repeats=2) if smoke else run("xt", "bfloat16", repeats=5, threads=0)


def main():
  svd_models.command_line(__doc__, run, suite_entry)


if __name__ == "__main__":
  main()
