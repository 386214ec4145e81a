"""SVD temporal VAE decode: ours vs diffusers' AutoencoderKLTemporalDecoder (same random weights),
and our decode's peak memory at 25 vs 14 frames with the same decode_chunk_size.

  python -m benchmarks.svd_vae --tiny        # CPU, seconds
  python -m benchmarks.svd_vae               # CPU, mid size
  python -m benchmarks.svd_vae --xt          # SVD-XT: 25 x 576 x 1024, chunk 8, bf16 (a GPU)
  [--threads N]: CPU threads of torch and XLA (default 1; 0: the libraries' defaults)

Time: decoding a (1, F, h, w, 4) latent video by chunks, as StableVideoDiffusionPipeline's
decode_latents does (diffusers: a Python loop of vae.decode(z[i:i+K], num_frames=len); ours: one
jitted program scanning the chunks), harness.alternate medians, outputs compared.
Memory: XLA's compiled memory analysis of our decode (arguments + output + temporaries - aliased;
nothing runs) at 14 and 25 frames with the same chunk: a decode bounded by its chunk grows only by
the output's size. On a GPU also the device's peak_bytes_in_use after one 25-frame decode.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import svd_models  # noqa: E402

if __name__ == "__main__":
  THREADS = svd_models.threads_from_argv(sys.argv)   # before jax is imported

from benchmarks import harness  # noqa: E402

CHUNKS = {"tiny": 2, "mid": 4, "xt": 8}


def compiled_memory(module, variables, size, frames, chunk: int, dtype: str) -> dict:
  """{'frames': F, 'total_bytes', 'temp_bytes', 'output_bytes', 'argument_bytes'} of the compiled
  decode of (1, F, h, w, C) latents at `chunk`."""
  import jax
  s = svd_models.spatial_compression(size)
  abstract = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), variables)
  z = jax.ShapeDtypeStruct((1, frames, size.height // s, size.width // s,
                            module.config.latent_channels), dtype)
  fn = jax.jit(lambda v, z: module.apply(v, z, decode_chunk_size=chunk, method="decode"))
  m = fn.lower(abstract, z).compile().memory_analysis()
  total = (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
           - m.alias_size_in_bytes)
  return dict(frames=frames, total_bytes=int(total), temp_bytes=int(m.temp_size_in_bytes),
              output_bytes=int(m.output_size_in_bytes), argument_bytes=int(m.argument_size_in_bytes))


def run(size_name: str, dtype: str = "float32", repeats: int = 3, threads: int = 1,
        memory_frames=(14, 25)) -> dict:
  import jax
  import jax.numpy as jnp
  import numpy as np
  import torch
  svd_models.set_torch_threads(threads)
  size, chunk = svd_models.SIZES[size_name], CHUNKS[size_name]
  ref = svd_models.torch_model("vae", size)
  module, variables = svd_models.convert("vae", ref, dtype, svd_models.default_attention())
  ref, device = svd_models.torch_device(ref, dtype)
  s = svd_models.spatial_compression(size)
  shape = (1, size.frames, size.height // s, size.width // s, module.config.latent_channels)
  latents = svd_models.rng_inputs(shape)

  memory = [compiled_memory(module, variables, size, f, chunk, dtype) for f in memory_frames]
  figures = dict(benchmark="svd_vae", size=size_name, dtype=dtype, latent_shape=list(shape),
                 decode_chunk_size=chunk, compiled_memory=memory,
                 memory_ratio=memory[-1]["total_bytes"] / memory[0]["total_bytes"])
  for m in memory:
    print(f"compiled decode, {m['frames']} frames at chunk {chunk}: total "
          f"{m['total_bytes'] / 2 ** 20:.1f} MiB (temp {m['temp_bytes'] / 2 ** 20:.1f}, output "
          f"{m['output_bytes'] / 2 ** 20:.1f}, weights + input {m['argument_bytes'] / 2 ** 20:.1f})")
  print(f"  {memory[-1]['frames']} / {memory[0]['frames']} frames: {figures['memory_ratio']:.3f}x")

  decode = jax.jit(lambda v, z: module.apply(v, z, decode_chunk_size=chunk, method="decode"))
  z = jnp.asarray(latents, dtype)
  t0 = time.perf_counter()
  out = np.asarray(jax.block_until_ready(decode(variables, z)), np.float32)
  figures["compile_s"] = time.perf_counter() - t0
  dev = jax.devices()[0]
  if dev.platform == "gpu" and dev.memory_stats():
    # The process's peak so far: weights, one decode of this video (and the compile's scratch).
    figures["device_peak_bytes_after_decode"] = int(dev.memory_stats()["peak_bytes_in_use"])
  fns = {"jax": lambda: decode(variables, z)}
  if device == "cuda" or dev.platform == "cpu":
    zt = torch.from_numpy(latents).to(device, getattr(torch, dtype)).permute(0, 1, 4, 2, 3)
    zt = zt.flatten(0, 1)

    def torch_decode():
      with torch.no_grad():
        frames = [ref.decode(zt[i:i + chunk], num_frames=len(zt[i:i + chunk])).sample
                  for i in range(0, zt.shape[0], chunk)]
      svd_models.sync(device)
      return torch.cat(frames)
    want = torch_decode().float().reshape(shape[0], shape[1], 3, size.height, size.width)
    want = want.permute(0, 1, 3, 4, 2).cpu().numpy()
    figures["max_abs_error"] = float(np.abs(out - want).max())
    fns["diffusers"] = torch_decode
  else:
    figures["diffusers"] = "not run: torch has no CUDA device here"
  res = harness.alternate(fns, repeats=repeats)
  print(harness.table(res, baseline="diffusers" if "diffusers" in res else None,
                      title=f"SVD VAE decode, size {size_name}, latents {shape} at chunk {chunk}, "
                            f"{dtype}, {dev.platform}"))
  print(f"  ours: compile + first call {figures['compile_s']:.2f} s; "
        + (f"max abs error vs diffusers {figures['max_abs_error']:.2e}"
           if "max_abs_error" in figures else figures["diffusers"]))
  figures["timings"] = svd_models.timing_figures(res)
  return figures


def suite_entry(smoke: bool) -> dict:
  """smoke: the tiny config, float32; else SVD-XT (25 x 576 x 1024 at chunk 8), bf16."""
  return run("tiny", "float32", repeats=2) if smoke else run("xt", "bfloat16", repeats=3, threads=0)


def main():
  svd_models.command_line(__doc__, run, suite_entry)


if __name__ == "__main__":
  main()
