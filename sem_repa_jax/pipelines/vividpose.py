"""VividPose: a reference image, driving skeleton maps and dense (SMPL-X rendering) maps -> the
reference person animated, on the SVD U-Net with reference attention, the identity-aware and the
geometry-aware controllers (methods/vividpose, docs/vividpose.md). No official code exists; the
sampler is SVD's (the paper initializes from SVD-img2vid and keeps "EDM's sampling method").

Stages (the image stages are Stable Video Diffusion's, pipelines/svd_i2v.py; the windows are
StableAnimator's, pipelines/windows.py):
1. images: the CLIP branch sees the reference at its own size; the VAE branch resized to
   (height, width); skeleton and dense maps (F, height, width, 3) uint8 -> [-1, 1];
2. conditioning, one compiled program run once per sample: the CLIP image embedding; the
   denoiser's context [CLIP token, ID tokens of the reference's raw ArcFace embedding] (no
   embedding: zero ID tokens, the ID branch adds exactly 0); the posterior mode of reference +
   noise_aug_strength N, unscaled, over every frame (SVD's image latents); F_p of the pose
   controller for every frame; the ReferenceNet (SD 2.1 U-Net) on that image latent times
   scaling_factor (what the training records hold as reference_latents) at timestep 0 with the
   CLIP embedding as its context -> one token set per spatial self-attention of the U-Net
   (methods/vividpose/reference.py), the input training gives it;
3. sampling, the Euler steps (Karras sigmas, EDM v-parameterization) in one lax.scan: every
   window of tile_size frames goes through the U-Net for [uncond, cond] in one call;
   classifier-free guidance with per-frame scales linspace(min, max, F). The unconditional half
   (the paper says nothing of guidance; AnimateAnyone's and Champ's ReferenceNet pipelines are the
   model): zero CLIP token and zero image latents (SVD's), zero ID tokens, the SAME reference
   features (training never drops them, nor the ReferenceNet's CLIP context) and the SAME pose
   condition F_p as the conditional half: the pose is a hard condition (AnimateAnyone, Champ),
   so guidance sharpens appearance and identity, not motion. StableAnimator instead drops the
   pose in its unconditional half (pipelines/stableanimator.py);
4. decode: latents / scaling_factor through the temporal VAE by chunks of decode_chunk_size.

Without a ReferenceNet (reference_net=None) there is no reference attention: with new
controllers and no ID embedding the pipeline is then SVD's (tests/pipelines/test_vividpose.py).
Batch: one reference and one driving sequence per call.
"""
import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from sem_repa_jax.diffusion import samplers
from sem_repa_jax.methods.vividpose.reference import check_reference_net, reference_net_features
from sem_repa_jax.pipelines import svd_i2v
from sem_repa_jax.pipelines.images import condition_frames
from sem_repa_jax.pipelines.windows import (WindowedSettings, guided_denoiser, initial_noise,
                                            periodic_noise, window_weights)


@dataclasses.dataclass(frozen=True)
class VividPoseSettings(WindowedSettings):
  """The paper's geometry (14 frames, 512 wide x 768 high), SVD-img2vid's sampling values; windows
  of the 14 frames the model generates at a time."""
  height: int = 768
  width: int = 512
  num_frames: int = 14
  decode_chunk_size: Optional[int] = 4
  tile_size: int = 14
  tile_overlap: int = 4


class VividPosePipeline:
  """model, variables: methods/vividpose/model.load_vividpose; reference_net, reference_vars: the
  ReferenceNet (kind sd-unet) or None (no reference attention); vae / image_encoder as svd_i2v."""

  def __init__(self, model, variables, reference_net, reference_vars, vae, vae_vars,
               image_encoder, image_encoder_vars, *, progress: bool = True):
    self.model, self.variables = model, variables
    self.reference_net, self.reference_vars = reference_net, reference_vars
    self.vae, self.vae_vars = vae, vae_vars
    self.image_encoder, self.image_encoder_vars = image_encoder, image_encoder_vars
    self.latent_channels = model.unet_config.out_channels
    self.spatial_compression = svd_i2v.checked_vae(vae, self.latent_channels)
    if model.pose_controller_config.compression != self.spatial_compression:
      raise ValueError(f"pose controller compression {model.pose_controller_config.compression} "
                       f"!= the VAE's {self.spatial_compression} (F_p is added to the latents)")
    if reference_net is not None:
      check_reference_net(reference_net.config, model.unet_config)
    self.progress = samplers.HostProgress("VividPose", enabled=progress)
    self._conditioning_fn = jax.jit(self._conditioning, static_argnames=("num_frames", "do_cfg"))
    self._latents_fn = jax.jit(self._latents, static_argnames=("method", "do_cfg", "num_frames"))
    self._decode_fn = jax.jit(lambda v, z, chunk: svd_i2v.final_video(self.vae, v, z, chunk),
                              static_argnums=2)

  # --- stage 2: the conditioning, once per sample ------------------------------------------------
  def _conditioning(self, variables, reference_vars, vae_vars, clip_vars, clip_image, pixels,
                    image_noise, noise_aug_strength, id_embedding, dense_maps, skeleton_maps, *,
                    num_frames, do_cfg):
    model = self.model
    clip = svd_i2v.image_embeddings(self.image_encoder, clip_vars, clip_image)      # (1, 1, D)
    context = model.apply(variables, clip, id_embedding, method=model.context)
    latent = svd_i2v.image_latent(self.vae, vae_vars, pixels, image_noise, noise_aug_strength)
    image_latents = jnp.broadcast_to(latent[:, None], (1, num_frames, *latent.shape[1:]))
    pose = None
    if dense_maps is not None or skeleton_maps is not None:
      pose = model.apply(variables, image_latents, dense_maps, skeleton_maps,
                         method=model.pose_condition)
    features = None
    if self.reference_net is not None:
      # As training feeds it (methods/vividpose/objective.py): the records' reference latent (SVD's
      # noise-augmented image latent at the denoiser's scale) and the un-dropped CLIP embedding.
      features = reference_net_features(self.reference_net, reference_vars,
                                        latent * self.vae.config.scaling_factor, clip)
    if do_cfg:
      context = jnp.concatenate([jnp.zeros_like(context), context])
      image_latents = jnp.concatenate([jnp.zeros_like(image_latents), image_latents])
      pose = None if pose is None else jnp.concatenate([pose, pose])
      features = None if features is None else tuple(jnp.concatenate([f, f]) for f in features)
    return {"context": context, "image_latents": image_latents, "pose": pose,
            "reference_features": features}

  # --- stage 3: the compiled sampling loop -------------------------------------------------------
  def _latents(self, variables, conditions, noise, time_ids, tables, scales, init_noise_sigma,
               windows, weights, *, method, do_cfg, num_frames):
    model, c = self.model, conditions
    image_latents, pose = c["image_latents"], c["pose"]
    ids = jnp.broadcast_to(time_ids, (image_latents.shape[0], time_ids.shape[0]))

    denoise = guided_denoiser(
        lambda x_w, t_b, idx: model.apply(variables, x_w, t_b, c["context"], ids,
                                          None if pose is None else pose[:, idx],
                                          c["reference_features"], method=model.denoise),
        image_latents, windows, weights, do_cfg)
    x = periodic_noise(noise, num_frames) * init_noise_sigma
    x, _ = samplers.sample_loop(denoise, x, tables, method=method, guidance_scales=scales,
                                progress=self.progress if self.progress.enabled else None)
    return x

  def decode(self, latents, decode_chunk_size: Optional[int] = 4):
    """(B, F, h, w, C) final latents -> (B, F, H, W, 3) in [-1, 1]."""
    return self._decode_fn(self.vae_vars, jnp.asarray(latents, jnp.float32), decode_chunk_size)

  def __call__(self, image, skeletons=None, dense_maps=None, id_embedding=None, *, key,
               latents=None, image_noise=None, decode: bool = True,
               settings: Optional[VividPoseSettings] = None, **overrides) -> dict:
    """Animates one reference.

    image: PIL image or (H0, W0, 3) uint8; skeletons, dense_maps: (F, height, width, 3) uint8
      skeleton maps and dense pose maps aligned with the output frames (either may be None: the
      paper's ablations); id_embedding: (D,) raw ArcFace embedding of the reference face, or None
      (no identity tokens); key: PRNG key, split into (initial noise, image noise augmentation).
    latents, image_noise: optional fixed noises, as StableAnimatorPipeline's (one window's).
    Returns dict(latents=(1, F, h, w, C) final latents, video=(1, F, H, W, 3) in [-1, 1]).
    """
    s = dataclasses.replace(settings or VividPoseSettings(), **overrides)
    s.check(self.spatial_compression)
    clip_image, pixels = svd_i2v.prepared_images(image, s)
    maps = {}
    for name, frames in (("skeletons", skeletons), ("dense_maps", dense_maps)):
      if frames is not None:
        maps[name] = jnp.asarray(condition_frames(frames, s.height, s.width, name))[None]
        if maps[name].shape[1] != s.num_frames:
          raise ValueError(f"{maps[name].shape[1]} {name} for num_frames={s.num_frames}")
    if id_embedding is not None:
      id_embedding = np.asarray(id_embedding, np.float32).reshape(1, -1)
      want = self.model.id_controller_config.id_embeddings_dim
      if id_embedding.shape[1] != want:
        raise ValueError(f"id_embedding of {id_embedding.shape[1]} values: expected {want} (the "
                         "ID controller's ArcFace width)")
    c = self.spatial_compression
    tile = min(s.tile_size, s.num_frames)
    latent_shape = (1, tile, s.height // c, s.width // c, self.latent_channels)
    latents, image_noise = initial_noise(key, latents, latent_shape, image_noise, pixels.shape)
    conditions = self._conditioning_fn(
        self.variables, self.reference_vars, self.vae_vars, self.image_encoder_vars,
        jnp.asarray(clip_image), jnp.asarray(pixels), image_noise,
        np.float32(s.noise_aug_strength), id_embedding, maps.get("dense_maps"),
        maps.get("skeletons"), num_frames=s.num_frames, do_cfg=s.do_cfg)
    windows = s.windows()
    plan, scales = svd_i2v.euler_plan(s)
    out = self.progress.run(
        plan.num_steps, self._latents_fn, self.variables, conditions, latents,
        jnp.asarray(svd_i2v.added_time_ids(s)), plan.arrays(), jnp.asarray(scales, jnp.float32),
        np.float32(plan.init_noise_sigma), jnp.asarray(windows),
        jnp.asarray(window_weights(windows.shape[1])), method=plan.method, do_cfg=s.do_cfg,
        num_frames=s.num_frames)
    result = {"latents": out}
    if decode:
      result["video"] = self.decode(out, s.decode_chunk_size)
    return result
