"""StableAnimator: a reference image and driving skeletons -> the reference person animated, as the
official inference (InferenceAnimationPipeline, and its HJB variant), the denoising loop with its
windows and the HJB face optimization compiled as one program; decoding after it, by chunks.

Stages (the image stages are Stable Video Diffusion's, pipelines/svd_i2v.py):
1. images: the CLIP branch sees the reference at its own size; the VAE branch resized to
   (height, width); skeleton images (F, height, width, 3) uint8 -> [-1, 1];
2. conditioning: context = [CLIP image embedding, the face encoder's 4 tokens of the reference's
   raw ArcFace embedding and that CLIP embedding] (1, 5, D); PoseNet features of every frame (once:
   the official recomputes them per window and step); the posterior mode of reference + 0.02 N,
   unscaled, over every frame; added_time_ids (fps - 1, motion_bucket_id, noise_aug_strength);
3. sampling, per Euler step (Karras sigmas, EDM v-parameterization): each window of tile_size
   frames (frame 0 and tile_size - 1 consecutive ones, stride tile_size - tile_overlap, a last
   window ending on the last frame) goes through the U-Net for [uncond, cond] in one call; uncond
   has zero context, zero reference latents and no pose. Window outputs are summed with the
   weights min(u, 2 - u), u = (j + 0.5) / (tile_size / 2), and divided by each frame's weight sum;
   classifier-free guidance with per-frame scales linspace(min, max, F); x0 -> HJB face
   optimization on its steps (diffusion/hjb.py, settings.hjb) -> the Euler update.
   The initial noise has tile_size frames, repeated over time (the official periodic noise).
   num_frames <= tile_size: one window of every frame (the official needs num_frames >= tile_size);
4. decode: latents / scaling_factor through the temporal VAE by chunks of decode_chunk_size.

Batch: one reference and one driving sequence per call, as the official.
"""
import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from sem_repa_jax.diffusion import samplers
from sem_repa_jax.diffusion.hjb import HJBConfig
from sem_repa_jax.pipelines import face_refinement, svd_i2v
from sem_repa_jax.pipelines.images import condition_frames
from sem_repa_jax.pipelines.windows import (WindowedSettings, guided_denoiser, initial_noise,
                                            periodic_noise, window_weights)


@dataclasses.dataclass(frozen=True)
class AnimationSettings(WindowedSettings):
  """The official inference scripts' values (512x512, 16 frames, guidance 3.0, chunks of 4)."""
  height: int = 512
  width: int = 512
  num_frames: int = 16
  min_guidance_scale: float = 3.0
  max_guidance_scale: float = 3.0
  decode_chunk_size: Optional[int] = 4
  hjb: Optional[HJBConfig] = None      # None: no face optimization

  def check(self, spatial_compression: int):
    super().check(spatial_compression)
    if self.hjb is not None:
      self.hjb.check_steps(self.num_inference_steps)


class StableAnimatorPipeline:
  """model, variables: methods/stableanimator/model.load_stableanimator; vae / image_encoder as
  svd_i2v; face_embedder (an IResNet, models/encoders/arcface.py) only for HJB."""

  def __init__(self, model, variables, vae, vae_vars, image_encoder, image_encoder_vars,
               face_embedder=None, face_embedder_vars=None, *, progress: bool = True):
    self.model, self.variables = model, variables
    self.vae, self.vae_vars = vae, vae_vars
    self.image_encoder, self.image_encoder_vars = image_encoder, image_encoder_vars
    self.face_embedder, self.face_embedder_vars = face_embedder, face_embedder_vars
    self.latent_channels = model.unet_config.out_channels
    self.spatial_compression = svd_i2v.checked_vae(vae, self.latent_channels)
    self.progress = samplers.HostProgress("StableAnimator", enabled=progress)
    self._latents_fn = jax.jit(self._latents, static_argnames=(
        "method", "do_cfg", "num_frames", "hjb_config", "decode_chunk_size"))
    self._decode_fn = jax.jit(lambda v, z, chunk: svd_i2v.final_video(self.vae, v, z, chunk),
                              static_argnums=2)

  # --- the compiled sampling loop ---------------------------------------------------------------
  def _latents(self, variables, vae_vars, clip_vars, face_vars, clip_image, pixels, poses,
               id_embedding, noise, image_noise, time_ids, noise_aug_strength, tables, scales,
               init_noise_sigma, windows, weights, face_targets, *,
               method, do_cfg, num_frames, hjb_config, decode_chunk_size):
    model = self.model
    clip = svd_i2v.image_embeddings(self.image_encoder, clip_vars, clip_image)      # (1, 1, D)
    context, pose = model.apply(variables, clip, id_embedding, poses[None],
                                method=model.conditioning)
    reference = svd_i2v.image_latent(self.vae, vae_vars, pixels, image_noise, noise_aug_strength)
    reference = jnp.broadcast_to(reference[:, None], (1, num_frames, *reference.shape[1:]))
    if do_cfg:
      context = jnp.concatenate([jnp.zeros_like(context), context])
      reference = jnp.concatenate([jnp.zeros_like(reference), reference])
      pose = jnp.concatenate([jnp.zeros_like(pose), pose])
    ids = jnp.broadcast_to(time_ids, (reference.shape[0], time_ids.shape[0]))

    denoise = guided_denoiser(
        lambda x_w, t_b, idx: model.apply(variables, x_w, t_b, context, ids, pose[:, idx],
                                          method=model.denoise),
        reference, windows, weights, do_cfg)
    refine = face_refinement.refine_hook(
        hjb_config, tables[0].shape[0], face_targets,
        decode=lambda z: svd_i2v.final_video(self.vae, vae_vars, z[None], decode_chunk_size)[0],
        embed=lambda faces: self.face_embedder.apply(face_vars, faces))
    x = periodic_noise(noise, num_frames) * init_noise_sigma
    x, _ = samplers.sample_loop(denoise, x, tables, method=method, guidance_scales=scales,
                                refine_x0=refine,
                                progress=self.progress if self.progress.enabled else None)
    return x

  def decode(self, latents, decode_chunk_size: Optional[int] = 4):
    """(B, F, h, w, C) final latents -> (B, F, H, W, 3) in [-1, 1]."""
    return self._decode_fn(self.vae_vars, jnp.asarray(latents, jnp.float32), decode_chunk_size)

  def __call__(self, image, poses, id_embedding, *, key, face_masks=None,
               reference_face_mask=None, latents=None, image_noise=None, decode: bool = True,
               settings: Optional[AnimationSettings] = None, **overrides) -> dict:
    """Animates one reference.

    image: PIL image or (H0, W0, 3) uint8; poses: (F, height, width, 3) uint8 skeletons;
    id_embedding: (512,) raw ArcFace embedding of the reference face (zeros without one, as the
      official); key: PRNG key, split into (initial noise, image noise augmentation).
    HJB (settings.hjb): face_masks (F, height, width) of the driving video (face pixels > 0.5 or
      > 127) and reference_face_mask (H0, W0) at the reference's own size.
    latents: optional initial noise of one window (1, min(tile_size, F), h, w, C), before
      init_noise_sigma; image_noise: optional (1, height, width, 3) augmentation noise.
    Returns dict(latents=(1, F, h, w, C), video=(1, F, H, W, 3) in [-1, 1]).
    """
    s = dataclasses.replace(settings or AnimationSettings(), **overrides)
    s.check(self.spatial_compression)
    clip_image, pixels = svd_i2v.prepared_images(image, s)
    poses = condition_frames(poses, s.height, s.width, "pose images")
    if len(poses) != s.num_frames:
      raise ValueError(f"{len(poses)} pose images for num_frames={s.num_frames}")
    c = self.spatial_compression
    tile = min(s.tile_size, s.num_frames)
    latent_hw = (s.height // c, s.width // c)
    latents, image_noise = initial_noise(key, latents, (1, tile, *latent_hw, self.latent_channels),
                                         image_noise, pixels.shape)
    id_embedding = np.asarray(id_embedding, np.float32).reshape(1, -1)
    targets = None
    if s.hjb is not None:
      targets = face_refinement.face_targets(
          s.hjb, self.face_embedder, self.face_embedder_vars, face_masks=face_masks,
          num_frames=s.num_frames, height=s.height, width=s.width, reference_image=clip_image[0],
          reference_face_mask=reference_face_mask)
    windows = s.windows()
    plan, scales = svd_i2v.euler_plan(s)
    out = self.progress.run(
        plan.num_steps, self._latents_fn, self.variables, self.vae_vars, self.image_encoder_vars,
        self.face_embedder_vars, jnp.asarray(clip_image), jnp.asarray(pixels), jnp.asarray(poses),
        id_embedding, latents, image_noise, jnp.asarray(svd_i2v.added_time_ids(s)),
        np.float32(s.noise_aug_strength), plan.arrays(), jnp.asarray(scales, jnp.float32),
        np.float32(plan.init_noise_sigma), jnp.asarray(windows),
        jnp.asarray(window_weights(windows.shape[1])), targets,
        method=plan.method, do_cfg=s.do_cfg, num_frames=s.num_frames, hjb_config=s.hjb,
        decode_chunk_size=s.decode_chunk_size)
    result = {"latents": out}
    if decode:
      result["video"] = self.decode(out, s.decode_chunk_size)
    return result
