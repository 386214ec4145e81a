"""Stable Video Diffusion image-to-video sampling (job `sample`, pipeline 'svd_i2v').

python -m sem_repa_jax.main --config configs/sample_svd.py \
  --config.image=x.png --config.model_dir=weights/svd-xt

model_dir holds the converted models `unet/`, `vae/` and `image_encoder/` (python -m conversion
svd-unet / svd-vae / clip-vision, from the folders of the same names in the diffusers repository);
unet_dir / vae_dir / image_encoder_dir override any of them. The defaults are diffusers'
StableVideoDiffusionPipeline defaults for stable-video-diffusion-img2vid-xt (for img2vid: 14
frames); models compute in the dtype they were converted to (`--dtype bfloat16`).
"""
import ml_collections

from configs import base


def get_config() -> ml_collections.ConfigDict:
  c = base.get_config()
  c.job = "sample"
  c.pipeline = "svd_i2v"
  c.workdir = "runs/sample_svd"

  c.image = ""
  c.model_dir = ""
  c.unet_dir = ""                 # empty: model_dir/unet
  c.vae_dir = ""                  # empty: model_dir/vae
  c.image_encoder_dir = ""        # empty: model_dir/image_encoder

  # pipelines/svd_i2v.py SamplingSettings, field by field.
  c.height = 576
  c.width = 1024
  c.num_frames = 25
  c.num_inference_steps = 25
  c.min_guidance_scale = 1.0      # per-frame guidance rises linspace(min, max, num_frames)
  c.max_guidance_scale = 3.0      # <= 1: no classifier-free guidance
  c.fps = 7                       # conditioning (the U-Net sees fps - 1) and the mp4's frame rate
  c.motion_bucket_id = 127
  c.noise_aug_strength = 0.02
  c.decode_chunk_size = 8         # frames decoded at once (memory); 0: all frames in one chunk
  c.sigma_min = 0.002             # the scheduler's Karras sigmas
  c.sigma_max = 700.0
  c.timestep_spacing = "leading"

  c.num_samples = 1               # videos per image, each with its own seed (seed + i)
  # An image of another aspect than height:width: 'crop' (centered), 'pad' (black bars) or
  # 'stretch' (diffusers' plain resize); the job logs what it did.
  c.image_fit = "crop"
  return c
