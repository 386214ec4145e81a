"""CogVideoX image-to-video sampling: our compiled pipeline vs diffusers, in one process.

  python benchmarks/sample_cogvideox.py --size tiny          # CPU, seconds
  python benchmarks/sample_cogvideox.py --size mid           # CPU, a minute or two
  python benchmarks/sample_cogvideox.py --size 5b-i2v        # GPU: real 5b-I2V shapes (480x720x49)

tiny/mid: random models built in diffusers, saved, converted with our converters, so both sides
run the same weights; CFG on (batch 2), DDIM. Reported: seconds per denoising step (sampling time /
steps, image encode included), sampling end to end (output_type='latent') and with VAE decode; ours
after compilation, with the first call (compile + run) shown separately; ratio = diffusers / ours.
5b-i2v: real shapes with random weights in bfloat16 (no downloads); the diffusers side runs only
when torch sees a CUDA device.
"""
import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _single_threaded_cpu() -> bool:
  # Decided before jax is imported: XLA reads its flags once. On a shared CPU, torch's and XLA's
  # thread pools oversubscribe the cores and time mostly contention (torch with 2 threads on a
  # loaded 2-core machine ran a step ~35x slower than with 1), so both sides get one thread.
  return "--threads" not in sys.argv or sys.argv[sys.argv.index("--threads") + 1] == "1"


if _single_threaded_cpu():
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
                             " intra_op_parallelism_threads=1").strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import harness  # noqa: E402
from sem_repa_jax.pipelines import cogvideox_i2v as i2v  # noqa: E402

# (transformer kwargs, vae kwargs, height, width, frames, text length)
SIZES = {
    "tiny": (dict(num_attention_heads=2, attention_head_dim=16, time_embed_dim=16, text_embed_dim=16,
                  num_layers=1),
             dict(block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=4),
             32, 48, 9, 6),
    "mid": (dict(num_attention_heads=4, attention_head_dim=32, time_embed_dim=64, text_embed_dim=64,
                 num_layers=4),
            dict(block_out_channels=(16, 32, 32, 64), layers_per_block=1, norm_num_groups=8),
            96, 144, 17, 32),
}


def _timed(fns: dict, repeats: int, title: str) -> dict:
  """Medians of each fn run in turns (benchmarks/harness.py), after the callers' own warm-up."""
  res = harness.alternate(fns, repeats=repeats, warmup=0)
  print(harness.table(res, title=title))
  return {k: t.median for k, t in res.items()}, res


def _cpu_models(size, workdir):
  """(diffusers transformer, diffusers vae, our pipeline) with the same random weights."""
  import torch
  from diffusers import AutoencoderKLCogVideoX, CogVideoXTransformer3DModel

  from conversion import available_kinds
  from sem_repa_jax.jobs.sample import model_facts
  from sem_repa_jax.models import load_pretrained
  tkw, vkw, h, w, frames, length = SIZES[size]
  torch.manual_seed(0)
  c = 4
  transformer = CogVideoXTransformer3DModel(
      in_channels=2 * c, out_channels=c, sample_width=w // 8, sample_height=h // 8,
      sample_frames=frames, patch_size=2, max_text_seq_length=length,
      use_rotary_positional_embeddings=True, use_learned_positional_embeddings=True, **tkw).eval()
  vae = AutoencoderKLCogVideoX(latent_channels=c, temporal_compression_ratio=4, sample_height=h,
                               sample_width=w, scaling_factor=0.7, **vkw).eval()
  transformer.save_pretrained(os.path.join(workdir, "src_t"))
  vae.save_pretrained(os.path.join(workdir, "src_v"))
  kinds = available_kinds()
  tdir, vdir = os.path.join(workdir, "transformer"), os.path.join(workdir, "vae")
  kinds["cogvideox-transformer"].convert(os.path.join(workdir, "src_t"), tdir)
  kinds["cogvideox-vae"].convert(os.path.join(workdir, "src_v"), vdir)

  class _Cfg:
    vae_scaling_factor = 0.0
    prediction_type = "v_prediction"   # CogVideoX's (diffusers' CogVideoXDDIMScheduler config)
  facts = model_facts(tdir, vdir, _Cfg)
  tm, tv = load_pretrained(tdir)
  vm, vv = load_pretrained(vdir)
  ours = i2v.CogVideoXImageToVideo(tm, tv, vm, vv, facts=facts, progress=False)
  return transformer, vae, ours, (h, w, frames, length, tkw["text_embed_dim"], c)


def bench_cpu(size, steps, repeats, threads):
  import torch
  from diffusers import CogVideoXDDIMScheduler, CogVideoXImageToVideoPipeline
  from PIL import Image
  if threads:
    torch.set_num_threads(threads)
  with tempfile.TemporaryDirectory() as tmp:
    transformer, vae, ours, (h, w, frames, length, d, c) = _cpu_models(size, tmp)
  scheduler = CogVideoXDDIMScheduler(
      beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
      prediction_type="v_prediction", rescale_betas_zero_snr=True, set_alpha_to_one=True,
      timestep_spacing="trailing", snr_shift_scale=1.0)
  ref = CogVideoXImageToVideoPipeline(tokenizer=None, text_encoder=None, vae=vae,
                                      transformer=transformer, scheduler=scheduler)
  ref.set_progress_bar_config(disable=True)
  r = np.random.default_rng(0)
  image = Image.fromarray(r.integers(0, 256, (h, w, 3), dtype=np.uint8))
  pos = r.standard_normal((1, length, d)).astype(np.float32)
  neg = r.standard_normal((1, length, d)).astype(np.float32)
  f_lat = (frames - 1) // 4 + 1
  latents = r.standard_normal((1, f_lat, h // 8, w // 8, c)).astype(np.float32)
  # The posterior noise diffusers draws from generator seed 0, so both sample the same video.
  image_noise = torch.randn((1, c, 1, h // 8, w // 8), generator=torch.Generator().manual_seed(0))
  image_noise = image_noise.permute(0, 2, 3, 4, 1).numpy()
  settings = i2v.SamplingSettings(height=h, width=w, num_frames=frames, num_inference_steps=steps,
                                  guidance_scale=6.0)

  def run_ref(output_type):
    with torch.no_grad():
      return ref(image=image, prompt_embeds=torch.from_numpy(pos),
                 negative_prompt_embeds=torch.from_numpy(neg), height=h, width=w,
                 num_frames=frames, num_inference_steps=steps, guidance_scale=6.0,
                 latents=torch.from_numpy(latents).permute(0, 1, 4, 2, 3),
                 generator=torch.Generator().manual_seed(0), output_type=output_type,
                 return_dict=False)[0]

  def run_ours(decode):
    out = ours(image, pos, neg, key=jax.random.key(0), settings=settings, latents=latents,
               image_noise=image_noise, decode=decode)
    return jax.block_until_ready(out["video"] if decode else out["latents"])

  t0 = time.perf_counter()
  run_ours(True)
  first = time.perf_counter() - t0
  run_ours(False)
  run_ref("latent")
  run_ref("pt")
  med, res = _timed({"ours latents": lambda: run_ours(False),
                     "diffusers latents": lambda: run_ref("latent"),
                     "ours +decode": lambda: run_ours(True),
                     "diffusers +decode": lambda: run_ref("pt")},
                    repeats, "seconds per sampling call (A B A B ... medians)")
  ours_lat, ref_lat, ours_all, ref_all = (med[k] for k in (
      "ours latents", "diffusers latents", "ours +decode", "diffusers +decode"))
  err = float(np.max(np.abs(np.asarray(run_ours(False)) - run_ref("latent").permute(0, 1, 3, 4, 2).numpy())))
  print(f"CogVideoX I2V sampling, size {size}: {h}x{w}x{frames} px, {f_lat} latent frames, "
        f"{steps} DDIM steps, CFG batch 2, {jax.devices()[0].platform} "
        f"(torch threads {torch.get_num_threads()}, XLA "
        f"{'1 thread' if _single_threaded_cpu() else 'default threads'})")
  print(f"  ours first call (compile + run): {first:.2f} s; final-latent max abs diff {err:.2e}")
  print(f"  {'':28s}{'diffusers':>12s}{'ours':>12s}{'ratio':>9s}")
  for name, a, b in [("s / denoising step", ref_lat / steps, ours_lat / steps),
                     ("sampling (latents) s", ref_lat, ours_lat),
                     ("end to end (+decode) s", ref_all, ours_all)]:
    print(f"  {name:28s}{a:12.4f}{b:12.4f}{a / b:8.2f}x")
  return {"size": size, "steps": steps, "first_call_s": first, "max_abs_diff": err,
          "timings": res, "s_per_step_ours": ours_lat / steps, "s_per_step_diffusers": ref_lat / steps,
          "ratio_diffusers_over_ours": ref_lat / ours_lat}


def bench_gpu_5b_i2v(steps, repeats, decode=True):
  """Real CogVideoX-5b-I2V shapes, random bf16 weights, our pipeline (and diffusers on CUDA).

  Returns seconds (medians): sampling to latents, and end to end with decode when `decode`."""
  from sem_repa_jax.models.cogvideox.transformer import PRESETS as T_PRESETS, build
  from sem_repa_jax.models.cogvideox.vae import cogvideox_vae
  import dataclasses
  tcfg = T_PRESETS["cogvideox-5b-i2v"]
  tm = build(dataclasses.asdict(tcfg), dtype="bfloat16", param_dtype="bfloat16", attention="auto")
  vm = cogvideox_vae("cogvideox-5b-i2v", dtype="bfloat16", param_dtype="bfloat16")
  h, w, frames = 480, 720, 49
  f_lat = (frames - 1) // 4 + 1
  t_in = (jnp.zeros((1, f_lat, h // 8, w // 8, 32), jnp.bfloat16),
          jnp.zeros((1, 226, 4096), jnp.bfloat16), jnp.zeros((1,), jnp.int32))
  tv = jax.jit(tm.init)(jax.random.key(0), *t_in)
  vv = jax.jit(vm.init)(jax.random.key(1), jnp.zeros((1, 1, h // 4, w // 4, 3), jnp.bfloat16))
  ours = i2v.CogVideoXImageToVideo(tm, tv, vm, vv, progress=False,
                                   facts=i2v.ModelFacts(latent_channels=16, vae_scaling_factor=0.7))
  settings = i2v.SamplingSettings(height=h, width=w, num_frames=frames, num_inference_steps=steps)
  image = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
  pos = jnp.zeros((1, 226, 4096), jnp.bfloat16) + 0.01
  neg = jnp.zeros((1, 226, 4096), jnp.bfloat16)

  def run(decode):
    out = ours(image, pos, neg, key=jax.random.key(0), settings=settings, decode=decode)
    return jax.block_until_ready(out["video"] if decode else out["latents"])

  t0 = time.perf_counter()
  run(decode)
  first = time.perf_counter() - t0
  if decode:
    run(False)
  med, _ = _timed({"ours latents": lambda: run(False), **({"ours +decode": lambda: run(True)}
                                                          if decode else {})},
                  repeats, f"ours, {steps} steps")
  lat, full = med["ours latents"], med.get("ours +decode", float("nan"))
  out = {"steps": steps, "ours_first_call_s": first, "ours_sampling_s": lat,
         "ours_end_to_end_s": full}
  print(f"CogVideoX-5b-I2V shapes 480x720x49, {steps} DDIM steps, CFG, bf16, {jax.devices()[0]}")
  print(f"  ours: first call {first:.1f} s, {lat / steps:.3f} s / step, sampling {lat:.1f} s, "
        f"end to end {full:.1f} s")
  try:
    import torch
    cuda = torch.cuda.is_available()
  except ImportError:
    cuda = False
  if not cuda:
    print("  diffusers: not run (torch has no CUDA device here)")
    out["diffusers"] = "not run: torch has no CUDA device"
    return out
  from diffusers import (AutoencoderKLCogVideoX, CogVideoXDDIMScheduler,
                         CogVideoXImageToVideoPipeline, CogVideoXTransformer3DModel)
  tconf = {k: v for k, v in dataclasses.asdict(tcfg).items()
           if k in CogVideoXTransformer3DModel.__init__.__code__.co_varnames}
  with torch.device("cuda"):   # random init on the GPU: on the host a 5b init takes minutes
    transformer = CogVideoXTransformer3DModel(**tconf).to(torch.bfloat16).eval()
    vae = AutoencoderKLCogVideoX(scaling_factor=0.7).to(torch.bfloat16).eval()
  scheduler = CogVideoXDDIMScheduler(
      beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
      prediction_type="v_prediction", rescale_betas_zero_snr=True, set_alpha_to_one=True,
      timestep_spacing="trailing", snr_shift_scale=1.0)
  ref = CogVideoXImageToVideoPipeline(tokenizer=None, text_encoder=None, vae=vae,
                                      transformer=transformer, scheduler=scheduler).to("cuda")
  ref.set_progress_bar_config(disable=True)
  from PIL import Image
  pil = Image.fromarray(image)
  tpos = torch.full((1, 226, 4096), 0.01, dtype=torch.bfloat16, device="cuda")
  tneg = torch.zeros_like(tpos)

  def run_ref(output_type):
    with torch.no_grad():
      out = ref(image=pil, prompt_embeds=tpos, negative_prompt_embeds=tneg, height=h, width=w,
                num_frames=frames, num_inference_steps=steps, output_type=output_type,
                return_dict=False)[0]
    torch.cuda.synchronize()
    return out

  run_ref("latent")
  med, _ = _timed({"diffusers latents": lambda: run_ref("latent"),
                   **({"diffusers +decode": lambda: run_ref("pt")} if decode else {})},
                  repeats, f"diffusers, {steps} steps")
  rlat, rfull = med["diffusers latents"], med.get("diffusers +decode", float("nan"))
  print(f"  diffusers: {rlat / steps:.3f} s / step, sampling {rlat:.1f} s, end to end {rfull:.1f} s; "
        f"ratio per step {rlat / lat:.2f}x, end to end {rfull / full:.2f}x")
  out.update(diffusers_sampling_s=rlat, diffusers_end_to_end_s=rfull,
             ratio_diffusers_over_ours=rlat / lat)
  return out


def suite_entry(smoke: bool) -> dict:
  """benchmarks/gpu_suite.py: 5b-I2V 50-step CFG sampling, ours vs diffusers, EXTRAPOLATED from
  SUITE_STEPS steps of each (x 50 / SUITE_STEPS: the once-per-call image encode is counted
  50 / SUITE_STEPS times, on both sides alike, so the 50-step figures are upper bounds).
  smoke: the tiny CPU models, 2 steps each, nothing extrapolated."""
  if smoke:
    return bench_cpu("tiny", 2, 1, 0)
  out = bench_gpu_5b_i2v(SUITE_STEPS, 1, decode=False)
  scale = 50 / SUITE_STEPS
  out["extrapolated_to_50_steps"] = {
      "method": f"{SUITE_STEPS}-step sampling time x {scale:g}",
      "ours_s": out["ours_sampling_s"] * scale,
      **({"diffusers_s": out["diffusers_sampling_s"] * scale} if "diffusers_sampling_s" in out
         else {})}
  return out


SUITE_STEPS = 3


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--size", choices=sorted(SIZES) + ["5b-i2v"], default="tiny")
  p.add_argument("--steps", type=int, default=None, help="DDIM steps (default 10 CPU, 50 GPU)")
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--threads", type=int, default=1,
                 help="CPU threads for torch and XLA (1: both single-threaded; 0: library defaults)")
  a = p.parse_args()
  if a.size == "5b-i2v":
    if jax.default_backend() != "gpu":
      sys.exit("--size 5b-i2v needs a GPU (jax.default_backend() is "
               f"{jax.default_backend()!r}); use tiny or mid on CPU")
    bench_gpu_5b_i2v(a.steps or 50, a.repeats)
  else:
    bench_cpu(a.size, a.steps or 10, a.repeats, a.threads)


if __name__ == "__main__":
  main()
