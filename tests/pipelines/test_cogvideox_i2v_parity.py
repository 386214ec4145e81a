"""Full image-to-video parity: tiny random CogVideoX transformer (5b-I2V layout: RoPE + learned
positions) and VAE built in diffusers, saved, converted with our converters, sampled by diffusers'
CogVideoXImageToVideoPipeline and by ours from the same initial noise, posterior noise and prompt
embeddings; DDIM 5 steps with static and dynamic guidance."""
import types

import jax
import numpy as np
import pytest
import torch
from diffusers import (AutoencoderKLCogVideoX, CogVideoXDDIMScheduler,
                       CogVideoXImageToVideoPipeline, CogVideoXTransformer3DModel)
from PIL import Image

from sem_repa_jax.jobs import sample as sample_job
from sem_repa_jax.models import load_pretrained
from sem_repa_jax.pipelines import cogvideox_i2v as i2v
from tests import parity

C, D, L = 4, 16, 6
H, W, FRAMES = 32, 48, 9


@pytest.fixture(scope="module")
def models(tmp_path_factory):
  torch.manual_seed(0)
  transformer = CogVideoXTransformer3DModel(
      num_attention_heads=2, attention_head_dim=16, in_channels=2 * C, out_channels=C,
      time_embed_dim=16, text_embed_dim=D, num_layers=1, sample_width=W // 8, sample_height=H // 8,
      sample_frames=FRAMES, patch_size=2, max_text_seq_length=L,
      use_rotary_positional_embeddings=True, use_learned_positional_embeddings=True).eval()
  vae = AutoencoderKLCogVideoX(block_out_channels=(8, 8, 8, 8), latent_channels=C,
                               layers_per_block=1, norm_num_groups=4, temporal_compression_ratio=4,
                               sample_height=H, sample_width=W, scaling_factor=0.7).eval()
  root = tmp_path_factory.mktemp("cogvideox_i2v")
  parity.convert_pretrained(transformer, "cogvideox-transformer", root / "src_transformer",
                            root / "transformer")
  parity.convert_pretrained(vae, "cogvideox-vae", root / "src_vae", root / "vae")
  facts = sample_job.model_facts(str(root / "transformer"), str(root / "vae"),
                                 types.SimpleNamespace(vae_scaling_factor=0.0,
                                                       prediction_type="v_prediction"))
  assert facts == i2v.ModelFacts(latent_channels=C, vae_scaling_factor=0.7)
  tm, tv = load_pretrained(str(root / "transformer"))
  vm, vv = load_pretrained(str(root / "vae"))
  ours = i2v.CogVideoXImageToVideo(tm, tv, vm, vv, facts=facts, progress=False)
  scheduler = CogVideoXDDIMScheduler(
      beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
      num_train_timesteps=1000, prediction_type="v_prediction", rescale_betas_zero_snr=True,
      set_alpha_to_one=True, steps_offset=0, timestep_spacing="trailing", snr_shift_scale=1.0)
  ref = CogVideoXImageToVideoPipeline(tokenizer=None, text_encoder=None, vae=vae,
                                      transformer=transformer, scheduler=scheduler)
  ref.set_progress_bar_config(disable=True)
  return ours, ref, root


@pytest.mark.parametrize("dynamic", [False, True])
def test_final_latents_match_diffusers(models, dynamic):
  ours, ref, _ = models
  r = np.random.default_rng(0)
  image = Image.fromarray(r.integers(0, 256, (H, W, 3), dtype=np.uint8))
  pos = r.standard_normal((1, L, D)).astype(np.float32)
  neg = r.standard_normal((1, L, D)).astype(np.float32)
  latents = r.standard_normal((1, 3, H // 8, W // 8, C)).astype(np.float32)
  noise = torch.randn((1, C, 1, H // 8, W // 8), generator=torch.Generator().manual_seed(3))
  with torch.no_grad():
    expected = ref(image=image, prompt_embeds=torch.from_numpy(pos),
                   negative_prompt_embeds=torch.from_numpy(neg), height=H, width=W,
                   num_frames=FRAMES, num_inference_steps=5, guidance_scale=6.0,
                   use_dynamic_cfg=dynamic, latents=torch.from_numpy(latents).permute(0, 1, 4, 2, 3),
                   generator=torch.Generator().manual_seed(3), output_type="latent",
                   return_dict=False)[0].permute(0, 1, 3, 4, 2).numpy()
  settings = i2v.SamplingSettings(height=H, width=W, num_frames=FRAMES, num_inference_steps=5,
                                  guidance_scale=6.0, use_dynamic_cfg=dynamic)
  out = ours(image, pos, neg, key=jax.random.key(0), settings=settings, latents=latents,
             image_noise=noise.permute(0, 2, 3, 4, 1).numpy(), decode=False)
  err = float(np.max(np.abs(np.asarray(out["latents"]) - expected)))
  print(f"I2V DDIM-5 CFG 6 dynamic={dynamic}: max abs error {err:.3g} (scale {np.abs(expected).max():.3g})")
  assert err <= 1e-3, err


def test_sample_job_writes_video_strip_and_latents(models, tmp_path):
  from configs import sample_cogvideox
  from data_pipelines.video import probe
  root = models[2]
  r = np.random.default_rng(1)
  Image.fromarray(r.integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(tmp_path / "face.png")
  np.savez(tmp_path / "prompt.npz", prompt_embeds=r.standard_normal((L, D)).astype(np.float32),
           negative_prompt_embeds=r.standard_normal((L, D)).astype(np.float32))
  c = sample_cogvideox.get_config()
  c.workdir, c.image, c.prompt_embeds = str(tmp_path / "run"), str(tmp_path / "face.png"), str(
      tmp_path / "prompt.npz")
  c.model_dir, c.height, c.width, c.num_frames = str(root), H, W, FRAMES
  c.num_inference_steps, c.num_windows, c.progress_bar = 2, 2, False
  sample_job.run(c)
  out = tmp_path / "run" / "samples"
  info = probe(str(out / "face_0.mp4"))
  assert (info.num_frames, info.height, info.width) == (2 * FRAMES - 1, H, W)
  assert Image.open(out / "face_0.png").size[1] == H
  assert np.load(out / "face_0.latents.npy").shape == (1, 2, 3, H // 8, W // 8, C)
