"""SVD image-to-video end to end: our SVDImageToVideo vs diffusers' StableVideoDiffusionPipeline,
same random weights, same initial and augmentation noise, a few steps.

  python -m benchmarks.sample_svd --tiny       # CPU, seconds
  python -m benchmarks.sample_svd              # CPU, mid size
  python -m benchmarks.sample_svd --xt         # SVD-XT: 25 x 576 x 1024, bf16 (a GPU)
  [--steps N] [--threads N] (CPU threads of torch and XLA; default 1, 0: the libraries' defaults)

Two phases, each timed with harness.alternate (medians): sampling to the final latents (image
encoding, CFG over 2 x F frames with per-frame guidance 1 -> 3, N Euler steps; diffusers with
output_type='latent') and decoding them by chunks (decode_latents). The 25-step figure is
EXTRAPOLATED, not measured: sampling(N) * 25 / N + decode; the image encoding is counted 25 / N
times there, on both sides alike.
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
FULL_STEPS = 25   # SVD-XT's default, the figure extrapolated to


def _diffusers_pipeline(unet, vae, clip, device: str):
  from diffusers import EulerDiscreteScheduler, StableVideoDiffusionPipeline
  from transformers import CLIPImageProcessor
  # stable-video-diffusion-img2vid-xt's scheduler_config.json (the fields that differ from the
  # class defaults).
  scheduler = EulerDiscreteScheduler(
      beta_schedule="scaled_linear", prediction_type="v_prediction", sigma_min=0.002,
      sigma_max=700.0, steps_offset=1, timestep_spacing="leading", timestep_type="continuous",
      use_karras_sigmas=True, interpolation_type="linear")
  ref = StableVideoDiffusionPipeline(vae=vae, image_encoder=clip, unet=unet, scheduler=scheduler,
                                     feature_extractor=CLIPImageProcessor()).to(device)
  ref.set_progress_bar_config(disable=True)
  return ref


def run(size_name: str, dtype: str = "float32", steps: int = 2, repeats: int = 2,
        threads: int = 1) -> dict:
  import jax
  import numpy as np
  import torch
  from PIL import Image

  from sem_repa_jax.pipelines import svd_i2v
  svd_models.set_torch_threads(threads)
  size, chunk = svd_models.SIZES[size_name], CHUNKS[size_name]
  attention = svd_models.default_attention()
  torch_models, ours_models = [], []
  for part in ("unet", "vae", "image_encoder"):
    m = svd_models.torch_model(part, size)
    ours_models.extend(svd_models.convert(part, m, dtype, attention))
    torch_models.append(svd_models.torch_device(m, dtype)[0])
  device = "cuda" if torch.cuda.is_available() else "cpu"
  ours = svd_i2v.SVDImageToVideo(*ours_models, progress=False)
  s = svd_models.spatial_compression(size)
  h, w, f = size.height, size.width, size.frames
  image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8))
  noise = svd_models.rng_inputs((1, f, h // s, w // s, 4))
  # diffusers' first draw from its generator is the augmentation noise (B, 3, H, W).
  image_noise = torch.randn((1, 3, h, w), generator=torch.Generator().manual_seed(0))
  kw = dict(height=h, width=w, num_frames=f, num_inference_steps=steps, min_guidance_scale=1.0,
            max_guidance_scale=3.0, fps=7, motion_bucket_id=127, noise_aug_strength=0.02)

  def ours_latents():
    return ours(image, key=jax.random.key(0), latents=noise, decode=False,
                image_noise=image_noise.permute(0, 2, 3, 1).numpy(), **kw)["latents"]

  t0 = time.perf_counter()
  lat = jax.block_until_ready(ours_latents())
  compile_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  jax.block_until_ready(ours.decode(lat, chunk))
  compile_s += time.perf_counter() - t0
  figures = dict(benchmark="sample_svd", size=size_name, dtype=dtype, height=h, width=w,
                 frames=f, measured_steps=steps, decode_chunk_size=chunk,
                 ours_compile_and_first_call_s=compile_s)
  sampling = {"jax": ours_latents}
  decoding = {"jax": lambda: ours.decode(lat, chunk)}
  if device == "cuda" or jax.default_backend() == "cpu":
    ref = _diffusers_pipeline(*torch_models, device)
    tdtype = getattr(torch, dtype)
    t_noise = torch.from_numpy(noise).permute(0, 1, 4, 2, 3).to(device, tdtype)

    def ref_latents():
      with torch.no_grad():
        out = ref(image, latents=t_noise, output_type="latent",
                  generator=torch.Generator().manual_seed(0), **kw).frames
      svd_models.sync(device)
      return out
    want = ref_latents()
    figures["final_latents_max_abs_error"] = float(np.abs(
        np.asarray(lat, np.float32) - want.float().permute(0, 1, 3, 4, 2).cpu().numpy()).max())

    def ref_decode():
      with torch.no_grad():
        out = ref.decode_latents(want, f, chunk)
      svd_models.sync(device)
      return out
    sampling["diffusers"], decoding["diffusers"] = ref_latents, ref_decode
  else:
    figures["diffusers"] = "not run: torch has no CUDA device here"
  res_s = harness.alternate(sampling, repeats=repeats)
  res_d = harness.alternate(decoding, repeats=repeats)
  base = "diffusers" if "diffusers" in res_s else None
  title = f"SVD I2V, size {size_name}, {f} x {h} x {w}, {dtype}, {jax.devices()[0].platform}"
  print(harness.table(res_s, baseline=base, title=f"{title}: sampling, {steps} steps"))
  print(harness.table(res_d, baseline=base, title=f"{title}: decode at chunk {chunk}"))
  figures["sampling"] = svd_models.timing_figures(res_s)
  figures["decode"] = svd_models.timing_figures(res_d)
  extrapolated = {k: res_s[k].median * FULL_STEPS / steps + res_d[k].median for k in res_s}
  figures[f"extrapolated_{FULL_STEPS}_steps_end_to_end_s"] = extrapolated
  if base:
    figures["extrapolated_ratio_jax_over_diffusers"] = extrapolated["jax"] / extrapolated[base]
  print(f"  ours: compile + first call {compile_s:.2f} s; EXTRAPOLATED {FULL_STEPS} steps end to "
        "end: " + ", ".join(f"{k} {v:.2f} s" for k, v in extrapolated.items())
        + (f"; final latents max abs error {figures['final_latents_max_abs_error']:.2e}"
           if "final_latents_max_abs_error" in figures else ""))
  return figures


def suite_entry(smoke: bool) -> dict:
  """smoke: the tiny config, 2 steps, float32; else SVD-XT (25 x 576 x 1024), bf16, 3 steps
  measured and 25 extrapolated."""
  if smoke:
    return run("tiny", "float32", steps=2, repeats=2)
  return run("xt", "bfloat16", steps=3, repeats=2, threads=0)


def main():
  svd_models.command_line(__doc__, run, suite_entry, steps=2)


if __name__ == "__main__":
  main()
