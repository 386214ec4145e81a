"""Stable Video Diffusion image-to-video: one image -> a video, as diffusers'
StableVideoDiffusionPipeline does it, with the CLIP embedding, the image latent and the whole EDM
Euler loop compiled as one program (decoding after it, by chunks).

Stages:
1. image: the CLIP branch sees the image at its own size, in [-1, 1], resized to the encoder's
   224 px with diffusers' antialiased bicubic (clip_preprocess); the VAE branch sees it resized to
   (height, width) with PIL Lanczos (as VideoProcessor.preprocess), in [-1, 1];
2. conditioning: image_embeds (B, 1, D) of the CLIP vision encoder; the VAE posterior MODE of
   image + noise_aug_strength * N(0, I), UNSCALED (no scaling_factor), repeated over the frames;
   added_time_ids (fps - 1, motion_bucket_id, noise_aug_strength);
3. sampling: x_T = init_noise_sigma * N(0, I); every step the U-Net sees [c_in x, image latents]
   on channels and c_noise = 0.25 ln sigma; classifier-free guidance with a scale per frame rising
   linspace(min, max, F), whose unconditional half has ZERO image latents and ZERO image
   embeddings (same added_time_ids); the v-prediction read as x0 (EDM, sigma_data 1) and the
   Euler step (diffusion/steps.py 'euler', Karras sigmas) in one lax.scan;
4. decode: latents / scaling_factor, the temporal VAE by chunks of decode_chunk_size frames
   (default: all frames at once, as diffusers' default of num_frames).

Models are (module, variables): unet.apply(v, sample (B,F,h,w,2C), c_noise (B,), context (B,1,D),
added_time_ids (B,3)); vae.apply(v, video, method='encode') -> (mean, logvar) and
vae.apply(v, latents, decode_chunk_size=K, method='decode'); image_encoder.apply(v, pixels
(B,224,224,3) CLIP-normalized) -> dict(image_embeds=...). Latents stay float32 through the loop.
"""
import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from sem_repa_jax.diffusion import guidance, samplers
from sem_repa_jax.diffusion.parameterization import Preconditioning
from sem_repa_jax.models.encoders.clip_preprocess import preprocess_for_clip
from sem_repa_jax.pipelines.images import pixels_at_own_size, preprocess_image


@dataclasses.dataclass(frozen=True)
class SamplingSettings:
  """diffusers' __call__ defaults for img2vid-xt, and its scheduler config (sigmas, spacing)."""
  height: int = 576
  width: int = 1024
  num_frames: int = 25
  num_inference_steps: int = 25
  min_guidance_scale: float = 1.0
  max_guidance_scale: float = 3.0
  fps: int = 7
  motion_bucket_id: int = 127
  noise_aug_strength: float = 0.02
  decode_chunk_size: Optional[int] = None   # None: every frame of a video in one chunk
  sigma_min: float = 0.002
  sigma_max: float = 700.0
  timestep_spacing: str = "leading"

  @property
  def do_cfg(self) -> bool:
    # diffusers decides on max_guidance_scale (its guidance_scale when the embeddings are made).
    return self.max_guidance_scale > 1.0

  def check(self, spatial_compression: int):
    s = spatial_compression
    if self.height % s or self.width % s:
      raise ValueError(f"height x width = {self.height} x {self.width}: both must be multiples of "
                       f"the VAE's spatial compression {s}")
    if self.num_frames < 1 or self.num_inference_steps < 1:
      raise ValueError(f"num_frames={self.num_frames}, num_inference_steps="
                       f"{self.num_inference_steps}: both must be at least 1")
    if self.decode_chunk_size is not None and self.decode_chunk_size < 1:
      raise ValueError(f"decode_chunk_size={self.decode_chunk_size} must be at least 1")


def added_time_ids(settings: SamplingSettings) -> np.ndarray:
  """(3,) float32 (fps - 1, motion_bucket_id, noise_aug_strength), as diffusers passes them."""
  return np.array([settings.fps - 1, settings.motion_bucket_id, settings.noise_aug_strength],
                  np.float32)


def image_embeddings(image_encoder, clip_vars, pixels):
  """(B, H0, W0, 3) in [-1, 1] at the image's own size -> (B, 1, D) CLIP image_embeds."""
  out = image_encoder.apply(clip_vars, preprocess_for_clip(pixels, image_encoder.config.image_size))
  return out["image_embeds"].astype(jnp.float32)[:, None]


def image_latent(vae, vae_vars, pixels, noise, noise_aug_strength):
  """The posterior mode of the noise-augmented image (B, H, W, 3), unscaled: (B, h, w, C)."""
  mean, _ = vae.apply(vae_vars, (pixels + noise_aug_strength * noise)[:, None], method="encode")
  return mean[:, 0].astype(jnp.float32)


def euler_plan(settings: SamplingSettings):
  """(Euler plan of the settings' steps and sigmas, (n, F) per-frame guidance table)."""
  plan = samplers.make_plan("euler", None, settings.num_inference_steps,
                            sigma_min=settings.sigma_min, sigma_max=settings.sigma_max,
                            timestep_spacing=settings.timestep_spacing)
  frames = guidance.frame_guidance_scales(settings.num_frames, settings.min_guidance_scale,
                                          settings.max_guidance_scale)
  return plan, guidance.every_step(frames, plan.num_steps)


def final_video(vae, vae_vars, latents, decode_chunk_size):
  """(B, F, h, w, C) final (scaled) latents -> (B, F, H, W, 3) in [-1, 1], decoded by chunks."""
  video = vae.apply(vae_vars, latents / vae.config.scaling_factor,
                    decode_chunk_size=decode_chunk_size, method="decode")
  return video.astype(jnp.float32)


def prepared_images(image, settings: SamplingSettings):
  """One image or a list of one size -> (originals (B, H0, W0, 3) for CLIP, pixels (B, H, W, 3)
  resized for the VAE), both float32 in [-1, 1]."""
  images = [image] if not isinstance(image, (list, tuple)) else list(image)
  originals = [pixels_at_own_size(im) for im in images]
  if len({a.shape for a in originals}) > 1:
    raise ValueError(f"images of sizes {[a.shape[:2] for a in originals]}: a batch must share "
                     "one size (diffusers stacks them for the CLIP branch)")
  pixels = np.stack([preprocess_image(im, settings.height, settings.width) for im in images])
  return np.stack(originals), pixels


class SVDImageToVideo:
  """The pipeline; its compiled functions are built once per instance and reused across calls."""

  def __init__(self, unet, unet_vars, vae, vae_vars, image_encoder, image_encoder_vars, *,
               progress: bool = True):
    self.unet, self.unet_vars = unet, unet_vars
    self.vae, self.vae_vars = vae, vae_vars
    self.image_encoder, self.image_encoder_vars = image_encoder, image_encoder_vars
    self.latent_channels = unet.config.out_channels
    if unet.config.in_channels != 2 * self.latent_channels:
      raise ValueError(f"U-Net in_channels {unet.config.in_channels}: expected 2 x out_channels "
                       f"{self.latent_channels} (noisy latents + image latents)")
    self.spatial_compression = checked_vae(vae, self.latent_channels)
    self.progress = samplers.HostProgress("SVD I2V", enabled=progress)
    self._latents_fn = jax.jit(self._latents, static_argnames=("method", "do_cfg", "num_frames"))
    self._decode_fn = jax.jit(self._decode, static_argnames=("decode_chunk_size",))

  # --- stage 2: the conditioning -------------------------------------------------------------------
  def image_embeddings(self, clip_vars, pixels):
    return image_embeddings(self.image_encoder, clip_vars, pixels)

  def image_latent(self, vae_vars, pixels, noise, noise_aug_strength):
    return image_latent(self.vae, vae_vars, pixels, noise, noise_aug_strength)

  # --- stage 3: the compiled sampling loop ---------------------------------------------------------
  def _latents(self, unet_vars, vae_vars, clip_vars, clip_images, pixels, latents, image_noise,
               time_ids, noise_aug_strength, tables, scales, init_noise_sigma, key, *, method,
               do_cfg, num_frames):
    k_lat, k_img = jax.random.split(key)
    b, hw = pixels.shape[0], (pixels.shape[1] // self.spatial_compression,
                              pixels.shape[2] // self.spatial_compression)
    if latents is None:
      latents = jax.random.normal(k_lat, (b, num_frames, *hw, self.latent_channels), jnp.float32)
    latents = latents * init_noise_sigma
    if image_noise is None:
      image_noise = jax.random.normal(k_img, pixels.shape, jnp.float32)
    context = self.image_embeddings(clip_vars, clip_images)
    image_latent = self.image_latent(vae_vars, pixels, image_noise, noise_aug_strength)
    image_latents = jnp.broadcast_to(image_latent[:, None], (b, num_frames, *image_latent.shape[1:]))
    if do_cfg:
      context = jnp.concatenate([jnp.zeros_like(context), context], axis=0)
      image_latents = jnp.concatenate([jnp.zeros_like(image_latents), image_latents], axis=0)
    ids = jnp.broadcast_to(time_ids, (image_latents.shape[0], time_ids.shape[0]))

    def denoise(x, pre: Preconditioning, scale):
      x_in = pre.scale_input(x)
      x_in = jnp.concatenate([x_in, x_in], axis=0) if do_cfg else x_in
      x_in = jnp.concatenate([x_in, image_latents], axis=-1)
      t_b = jnp.full((x_in.shape[0],), pre.timestep, jnp.float32)
      out = self.unet.apply(unet_vars, x_in, t_b, context, ids).astype(jnp.float32)
      if do_cfg:
        uncond, cond = jnp.split(out, 2, axis=0)
        out = guidance.classifier_free_guidance(uncond, cond, scale)
      # Guidance is linear in the output and x0 affine in it at fixed x: guiding the raw v
      # (diffusers) equals guiding x0.
      return pre.to_x0(x, out)

    x, _ = samplers.sample_loop(denoise, latents, tables, method=method, guidance_scales=scales,
                                progress=self.progress if self.progress.enabled else None)
    return x

  # --- stage 4: decode -----------------------------------------------------------------------------
  def _decode(self, vae_vars, latents, *, decode_chunk_size):
    return final_video(self.vae, vae_vars, latents, decode_chunk_size)

  def decode(self, latents, decode_chunk_size: Optional[int] = None):
    """(B, F, h, w, C) final latents -> (B, F, H, W, 3) in [-1, 1] (diffusers' decode_latents)."""
    return self._decode_fn(self.vae_vars, jnp.asarray(latents, jnp.float32),
                           decode_chunk_size=decode_chunk_size)

  def plan(self, settings: SamplingSettings):
    """(Euler plan, (n, F) per-frame guidance table)."""
    return euler_plan(settings)

  def __call__(self, image, *, key, latents=None, image_noise=None, decode: bool = True,
               settings: Optional[SamplingSettings] = None, **overrides) -> dict:
    """Generates B videos.

    image: one PIL image / (H, W, 3) uint8 array, or a list of B of them (of one size).
    key: jax PRNG key, split into (initial noise, image noise augmentation).
    settings / overrides: a SamplingSettings, and its fields by keyword (height, width,
      num_frames, num_inference_steps, min_guidance_scale, max_guidance_scale, fps,
      motion_bucket_id, noise_aug_strength, decode_chunk_size, ...).
    latents: optional initial noise (B, F, h, w, C), before init_noise_sigma (as diffusers'
      `latents=`, channels-last); image_noise: optional (B, H, W, 3) noise of the augmentation
      (diffusers' first randn_tensor draw, channels-last).
    Returns dict(latents=(B, F, h, w, C) final latents, video=(B, F, H, W, 3) in [-1, 1]).
    """
    settings = dataclasses.replace(settings or SamplingSettings(), **overrides)
    settings.check(self.spatial_compression)
    originals, pixels = prepared_images(image, settings)
    b, s = len(pixels), self.spatial_compression
    shape = (b, settings.num_frames, settings.height // s, settings.width // s,
             self.latent_channels)
    if latents is not None:
      latents = checked_input(latents, shape, "latents")
    if image_noise is not None:
      image_noise = checked_input(image_noise, pixels.shape, "image_noise")
    plan, scales = self.plan(settings)
    out = self.progress.run(
        plan.num_steps, self._latents_fn, self.unet_vars, self.vae_vars, self.image_encoder_vars,
        jnp.asarray(originals), jnp.asarray(pixels), latents, image_noise,
        jnp.asarray(added_time_ids(settings)), np.float32(settings.noise_aug_strength),
        plan.arrays(), jnp.asarray(scales, jnp.float32), np.float32(plan.init_noise_sigma), key,
        method=plan.method, do_cfg=settings.do_cfg, num_frames=settings.num_frames)
    result = {"latents": out}
    if decode:
      result["video"] = self.decode(out, settings.decode_chunk_size)
    return result


def checked_vae(vae, latent_channels: int) -> int:
  """The VAE's spatial compression, after checking its latents are the U-Net's."""
  if vae.config.latent_channels != latent_channels:
    raise ValueError(f"VAE latent_channels {vae.config.latent_channels} != U-Net out_channels "
                     f"{latent_channels}")
  return vae.config.spatial_compression


def checked_input(x, shape, name):
  x = jnp.asarray(x, jnp.float32)
  if x.shape != tuple(shape):
    raise ValueError(f"{name} of shape {x.shape}: expected {tuple(shape)} (channels-last)")
  return x
