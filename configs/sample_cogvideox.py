"""CogVideoX image-to-video sampling (job `sample`).

python -m sem_repa_jax.main --config configs/sample_cogvideox.py \
  --config.image=face.png --config.prompt_embeds=prompt.npz --config.model_dir=weights/cogvideox-5b-i2v

model_dir holds the converted models `transformer/` and `vae/` (python -m conversion
cogvideox-transformer / cogvideox-vae); transformer_dir / vae_dir override either.
prompt_embeds: .npy (L, D) or (B, L, D), or .npz / .safetensors with `prompt_embeds` and optionally
`negative_prompt_embeds` (the T5 embedding of "" for classifier-free guidance).
"""
import ml_collections

from configs import base


def get_config() -> ml_collections.ConfigDict:
  c = base.get_config()
  c.job = "sample"
  c.pipeline = "cogvideox_i2v"    # configs/sample_svd.py: 'svd_i2v'
  c.workdir = "runs/sample_cogvideox"

  c.image = ""
  c.prompt_embeds = ""
  c.negative_prompt_embeds = ""   # a file; empty: the `negative_prompt_embeds` entry of prompt_embeds
  c.model_dir = ""
  c.transformer_dir = ""          # empty: model_dir/transformer
  c.vae_dir = ""                  # empty: model_dir/vae

  c.height = 480
  c.width = 720
  c.num_frames = 49
  c.num_inference_steps = 50
  c.guidance_scale = 6.0
  c.use_dynamic_cfg = False
  c.sampler = "ddim"              # 'ddim' | 'dpm'
  c.snr_shift_scale = 1.0         # CogVideoX-2b: 3.0
  c.timestep_spacing = "trailing"
  # What the transformer's output is: CogVideoX 'v_prediction'; 'sample' for a backbone fine-tuned
  # with --config.diffusion.prediction_type=sample (configs/semrepa.py).
  c.prediction_type = "v_prediction"
  # Read from the converted VAE / transformer configs when 0 / empty.
  c.vae_scaling_factor = 0.0
  c.num_windows = 1               # > 1: sliding-window long video (docs/sampling.md)
  c.fps = 8
  c.num_samples = 1               # videos per image, each with its own seed (seed + i)
  # An image of another aspect than height:width: 'crop' (centered), 'pad' (black bars) or
  # 'stretch' (diffusers' plain resize); the job logs what it did.
  c.image_fit = "crop"
  return c
