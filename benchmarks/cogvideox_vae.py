"""CogVideoX VAE: JAX vs diffusers AutoencoderKLCogVideoX, time and peak memory.

  python -m benchmarks.cogvideox_vae [--height 64 --width 96 --frames 17 --mem-latent-frames 13 25]

Both sides use the same random weights (the full CogVideoX-2b architecture unless --tiny), float32.
Timing: encode of a --frames video and decode of its latents, in one process, in turns
(benchmarks/harness.py: medians of --repeats, min/max, load average).
Memory, the point being that the chunked decode holds one chunk, not the whole video:
  - JAX: on GPU the device's peak_bytes_in_use around one decode; on CPU XLA's compiled memory
    analysis of the decode (arguments + outputs + temporaries - aliased), which is what the
    executable allocates.
  - both frameworks on CPU: peak RSS growth of a fresh subprocess over one decode
    (RSS sampled every 2 ms during the call, after the weights are loaded and, for JAX, compiled).
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import harness  # noqa: E402

MiB = 2 ** 20


def build(tiny: bool, seed: int = 0, conv_impl: str = "taps"):
  import torch
  from diffusers import AutoencoderKLCogVideoX
  from conversion import cogvideox_vae as conv
  from conversion.mapping import DictSource, unflatten
  from sem_repa_jax.models.cogvideox.vae import cogvideox_vae, config_from_diffusers
  torch.manual_seed(seed)
  kw = dict(block_out_channels=(8, 16, 16, 16), latent_channels=4, layers_per_block=1,
            norm_num_groups=4) if tiny else {}
  ref = AutoencoderKLCogVideoX(**kw).eval()
  cfg = config_from_diffusers(dict(ref.config))
  flat = conv.convert_arrays(DictSource({k: v.numpy() for k, v in ref.state_dict().items()}), cfg)
  import jax
  variables = jax.tree_util.tree_map(jax.numpy.asarray, unflatten(flat))
  return ref, cogvideox_vae(cfg.__dict__, conv_impl=conv_impl), variables


def timing(args):
  import jax
  import torch
  torch.set_num_threads(args.threads or os.cpu_count())
  ref, module, variables = build(args.tiny, conv_impl=args.conv_impl)
  cfg = module.config
  r = np.random.default_rng(0)
  video = r.uniform(-1, 1, (1, args.frames, args.height, args.width, 3)).astype(np.float32)
  enc = jax.jit(lambda v, x: module.apply(v, x, method="encode"))
  dec = jax.jit(lambda v, z: module.apply(v, z, method="decode"))
  t = time.perf_counter()
  mean, _ = jax.block_until_ready(enc(variables, video))
  t_enc_compile = time.perf_counter() - t
  latents = np.array(mean)
  t = time.perf_counter()
  out = jax.block_until_ready(dec(variables, latents))
  t_dec_compile = time.perf_counter() - t
  vt = torch.from_numpy(video).permute(0, 4, 1, 2, 3)
  zt = torch.from_numpy(latents).permute(0, 4, 1, 2, 3)
  with torch.no_grad():
    ref_mean = ref.encode(vt).latent_dist.mean.permute(0, 2, 3, 4, 1).numpy()
    ref_out = ref.decode(zt).sample.permute(0, 2, 3, 4, 1).numpy()

  def torch_encode():
    with torch.no_grad():
      ref.encode(vt)

  def torch_decode():
    with torch.no_grad():
      ref.decode(zt)

  res = harness.alternate({
      "encode jax": lambda: enc(variables, video), "encode diffusers": torch_encode,
      "decode jax": lambda: dec(variables, latents), "decode diffusers": torch_decode},
      repeats=args.repeats, warmup=0)   # both compiled and warmed above
  te, te_ref, td, td_ref = (res[k].median for k in ("encode jax", "encode diffusers",
                                                    "decode jax", "decode diffusers"))
  print(f"device {jax.devices()[0].device_kind}; video {video.shape} -> latents {latents.shape}; "
        f"block_out {cfg.block_out_channels}, layers {cfg.layers_per_block}")
  print(f"parity: encode mean max abs {np.abs(latents - ref_mean).max():.3g}, "
        f"decode max abs {np.abs(np.asarray(out) - ref_out).max():.3g}")
  print(f"compile: encode {t_enc_compile:.1f} s, decode {t_dec_compile:.1f} s (first call)")
  print(f"encode: jax {te:.3f} s, diffusers {te_ref:.3f} s, ratio jax/diffusers {te / te_ref:.2f}")
  print(f"decode: jax {td:.3f} s, diffusers {td_ref:.3f} s, ratio jax/diffusers {td / td_ref:.2f}")
  print(harness.table(res, title="seconds per call (A B A B ... medians)"))
  return {"encode_jax": res["encode jax"], "encode_diffusers": res["encode diffusers"],
          "decode_jax": res["decode jax"], "decode_diffusers": res["decode diffusers"],
          "encode_ratio": te / te_ref, "decode_ratio": td / td_ref}


def compiled_memory(args):
  """XLA's memory analysis of the jitted decode for each latent frame count (nothing is run)."""
  import jax
  import jax.numpy as jnp
  from conversion.cogvideox_vae import target_shapes
  from sem_repa_jax.models.cogvideox.vae import cogvideox_vae
  from conversion.mapping import unflatten
  kw = dict(block_out_channels=(8, 16, 16, 16), latent_channels=4, layers_per_block=1,
            norm_num_groups=4) if args.tiny else {}
  module = cogvideox_vae(kw, conv_impl=args.conv_impl)
  cfg = module.config
  v = unflatten({k: jax.ShapeDtypeStruct(s, jnp.float32) for k, s in target_shapes(module).items()})
  s = cfg.spatial_compression
  rows = []
  for f in args.mem_latent_frames:
    z = jax.ShapeDtypeStruct((1, f, args.height // s, args.width // s, cfg.latent_channels),
                             jnp.float32)
    compiled = jax.jit(lambda v, z: module.apply(v, z, method="decode")).lower(v, z).compile()
    m = compiled.memory_analysis()
    total = (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
             - m.alias_size_in_bytes)
    rows.append((f, total, m.temp_size_in_bytes, m.output_size_in_bytes))
    print(f"XLA compiled decode, {f} latent frames: total {total / MiB:.0f} MiB "
          f"(temp {m.temp_size_in_bytes / MiB:.0f}, output {m.output_size_in_bytes / MiB:.0f}, "
          f"weights+input {m.argument_size_in_bytes / MiB:.0f})")
  if len(rows) > 1:
    print(f"ratio {rows[-1][0]} vs {rows[0][0]} latent frames: total {rows[-1][1] / rows[0][1]:.2f}x, "
          f"temporaries {rows[-1][2] / rows[0][2]:.2f}x")


def rss_child(impl: str, frames: int, args):
  """In a fresh process: peak RSS growth over one decode (weights loaded and compiled first)."""
  import jax
  import torch
  torch.set_num_threads(args.threads or os.cpu_count())
  ref, module, variables = build(args.tiny, conv_impl=args.conv_impl)
  s = module.config.spatial_compression
  z = np.random.default_rng(0).standard_normal(
      (1, frames, args.height // s, args.width // s, module.config.latent_channels)).astype(np.float32)
  if impl == "jax":
    dec = jax.jit(lambda v, z: module.apply(v, z, method="decode")).lower(variables, z).compile()
    del ref
    growth = harness.peak_rss_growth_mib(lambda: jax.block_until_ready(dec(variables, z)))
  else:
    del variables
    zt = torch.from_numpy(z).permute(0, 4, 1, 2, 3)
    with torch.no_grad():
      growth = harness.peak_rss_growth_mib(lambda: ref.decode(zt))
  print(json.dumps({"impl": impl, "frames": frames, "peak_growth_mib": growth}))


def rss(args):
  rows = {}
  for impl in ("jax", "diffusers"):
    for f in args.mem_latent_frames:
      cmd = [sys.executable, "-m", "benchmarks.cogvideox_vae", "--rss-child", impl, str(f),
             "--height", str(args.height), "--width", str(args.width),
             "--conv-impl", args.conv_impl, "--threads", str(args.threads)]
      cmd += ["--tiny"] if args.tiny else []
      out = subprocess.run(cmd, capture_output=True, text=True, check=True,
                           cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
      row = json.loads(out.stdout.strip().splitlines()[-1])
      rows[impl, f] = row["peak_growth_mib"]
      print(f"peak RSS growth over one decode, {impl}, {f} latent frames: {row['peak_growth_mib']:.0f} MiB")
  a, b = args.mem_latent_frames[0], args.mem_latent_frames[-1]
  for impl in ("jax", "diffusers"):
    if rows[impl, a] > 0:
      print(f"{impl}: {b} vs {a} latent frames {rows[impl, b] / rows[impl, a]:.2f}x")


def gpu_memory(args):
  import jax
  ref, module, variables = build(args.tiny, conv_impl=args.conv_impl)
  del ref
  s = module.config.spatial_compression
  dev = jax.devices()[0]
  for f in args.mem_latent_frames:
    z = np.zeros((1, f, args.height // s, args.width // s, module.config.latent_channels), np.float32)
    dec = jax.jit(lambda v, z: module.apply(v, z, method="decode")).lower(variables, z).compile()
    before = dev.memory_stats()["peak_bytes_in_use"]
    jax.block_until_ready(dec(variables, z))
    peak = dev.memory_stats()["peak_bytes_in_use"]
    print(f"GPU peak bytes in use, decode of {f} latent frames: {peak / MiB:.0f} MiB "
          f"(was {before / MiB:.0f} before)")


def decode_peak(module, variables, latents) -> dict:
  """Seconds and memory of one jitted decode: the device's peak bytes in use where it counts them
  (GPU), else XLA's compiled memory analysis (arguments + outputs + temporaries - aliased)."""
  import jax
  dec = jax.jit(lambda v, z: module.apply(v, z, method="decode")).lower(variables, latents).compile()
  m = dec.memory_analysis()
  row = {"compiled_bytes": int(m.argument_size_in_bytes + m.output_size_in_bytes
                               + m.temp_size_in_bytes - m.alias_size_in_bytes)}
  stats = jax.devices()[0].memory_stats() or {}
  t = time.perf_counter()
  jax.block_until_ready(dec(variables, latents))
  row["seconds_first_call"] = time.perf_counter() - t
  if "peak_bytes_in_use" in stats:
    row["peak_bytes_before"] = int(stats["peak_bytes_in_use"])
    row["peak_bytes"] = int(jax.devices()[0].memory_stats()["peak_bytes_in_use"])
  return row


def suite_entry(smoke: bool) -> dict:
  """benchmarks/gpu_suite.py: peak memory of a 49x480x720 decode (13x60x90 latents), 5b-I2V VAE in
  bfloat16 with random weights; smoke: tiny channels, 5x16x24 latents, float32 on any backend."""
  import jax
  import jax.numpy as jnp
  from sem_repa_jax.models.cogvideox.vae import cogvideox_vae
  if smoke:
    module = cogvideox_vae(dict(block_out_channels=(8, 16, 16, 16), latent_channels=4,
                                layers_per_block=1, norm_num_groups=4))
    shape, dtype = (1, 2, 16, 24, 4), jnp.float32
  else:
    module = cogvideox_vae("cogvideox-5b-i2v", dtype="bfloat16", param_dtype="bfloat16")
    shape, dtype = (1, 13, 60, 90, module.config.latent_channels), jnp.bfloat16
  from benchmarks.random_init import random_variables
  # Parameters do not depend on the video size: shaped on a small clip.
  variables = random_variables(module, jnp.zeros((1, 1, 32, 32, 3), dtype))
  row = decode_peak(module, variables, jnp.zeros(shape, dtype))
  row.update(latents=list(shape), dtype=jnp.dtype(dtype).name,
             video=[(shape[1] - 1) * 4 + 1, shape[2] * 8, shape[3] * 8])
  if "peak_bytes" in row:
    row["peak_gib"] = row["peak_bytes"] / 2 ** 30
  return row


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--height", type=int, default=64)
  p.add_argument("--width", type=int, default=96)
  p.add_argument("--frames", type=int, default=17)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--mem-latent-frames", type=int, nargs="+", default=[13, 25])
  p.add_argument("--tiny", action="store_true", help="tiny channels (a smoke run)")
  p.add_argument("--threads", type=int, default=0,
                 help="1: both frameworks single-threaded (steadier on a shared machine)")
  p.add_argument("--conv-impl", default="taps", choices=["taps", "conv3d"])
  p.add_argument("--skip-timing", action="store_true")
  p.add_argument("--skip-rss", action="store_true")
  p.add_argument("--rss-child", nargs=2, metavar=("IMPL", "FRAMES"), help=argparse.SUPPRESS)
  args = p.parse_args()
  if args.threads == 1:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
                               " intra_op_parallelism_threads=1")
  if args.rss_child:
    return rss_child(args.rss_child[0], int(args.rss_child[1]), args)
  import jax
  if not args.skip_timing:
    timing(args)
  if jax.devices()[0].platform == "gpu":
    gpu_memory(args)
  else:
    compiled_memory(args)
    if not args.skip_rss:
      rss(args)


if __name__ == "__main__":
  main()
