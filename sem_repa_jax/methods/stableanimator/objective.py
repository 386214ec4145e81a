"""StableAnimator's training objective: the face-mask weighted EDM loss with the official
conditioning dropout (porting-notes.md, StableAnimator "Training"), as pure functions.

  sigma ~ the cosine-interpolated logSNR density (or EDM's log-normal), per example
  x_sigma = x0 + sigma eps                                    x0: the clip's scaled VAE latents
  input   = concat([c_in x_sigma, reference latents / scaling_factor over every frame], channels)
  D       = c_skip x_sigma + c_out U-Net(input, c_noise | [CLIP, face tokens], pose, [6, 127, 0.02])
  loss    = mean((1 + sigma^2) / sigma^2 (D - x0)^2 (1 + M))   M: the face mask at latent size

Dropout per example r ~ U(0, 1) with p = conditioning_dropout (official 0.1): the CLIP token of
the context is zeroed when r < 2p, the reference latents when p <= r < 3p; face tokens and pose
are never dropped. The reference latents enter unscaled, as the official (it encodes the
reference with scale=False), so records keep them in the scale of the video latents and the
objective divides.
"""
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from sem_repa_jax.diffusion import losses, schedules
from sem_repa_jax.diffusion.parameterization import edm_training_preconditioning

BATCH_FIELDS = ("video_latents", "reference_latents", "clip_embeds", "id_embeds", "pose_images",
                "face_weight_masks")


@dataclass(frozen=True)
class ObjectiveConfig:
  sigma_density: str = "cosine_interpolated"   # or 'lognormal' (schedules.TRAINING_DENSITIES)
  stratified_sigmas: bool = False   # official: i.i.d. uniforms
  conditioning_dropout: float = 0.1
  vae_scaling_factor: float = 0.18215
  added_time_ids: tuple = (6.0, 127.0, 0.02)   # fps, motion bucket, noise augmentation
  face_mask_weight: float = 1.0                # the loss weight is 1 + face_mask_weight * M

  def __post_init__(self):
    if not 0.0 <= self.conditioning_dropout <= 1 / 3:
      raise ValueError(f"conditioning_dropout {self.conditioning_dropout}: expected 0..1/3 (the "
                       "reference latents are dropped for p <= r < 3p)")
    if self.sigma_density not in schedules.TRAINING_DENSITIES:
      raise ValueError(f"sigma_density {self.sigma_density!r}: expected one of "
                       f"{sorted(schedules.TRAINING_DENSITIES)}")
    if len(self.added_time_ids) != 3:
      raise ValueError(f"added_time_ids {self.added_time_ids}: expected (fps, motion bucket, "
                       "noise augmentation)")


class Draws(NamedTuple):
  """The randomness of one step: sigma (B,), noise like x0, dropout uniforms r (B,)."""
  sigma: jax.Array
  noise: jax.Array
  r: jax.Array


def draw(key, x0, cfg: ObjectiveConfig) -> Draws:
  k_sigma, k_noise, k_r = jax.random.split(key, 3)
  b = x0.shape[0]
  sigma = schedules.sample_training_sigmas(k_sigma, b, density=cfg.sigma_density,
                                           stratified=cfg.stratified_sigmas)
  return Draws(sigma, jax.random.normal(k_noise, x0.shape, jnp.float32),
               jax.random.uniform(k_r, (b,)))


def conditioning_dropout(r, p: float):
  """(keep_clip, keep_reference), (B,) bool each, from the uniforms r (the official masks)."""
  keep_clip = r >= 2 * p
  keep_reference = ~((r >= p) & (r < 3 * p))
  return keep_clip, keep_reference


def model_input(noisy, sigma, reference_latents, keep_reference, vae_scaling_factor: float):
  """(U-Net input (B, F, h, w, 2c), Preconditioning): c_in x_sigma and the unscaled reference
  latents (B, h, w, c), zeroed where dropped, repeated over the F frames."""
  pre = edm_training_preconditioning(sigma, noisy.ndim)
  ref = reference_latents.astype(jnp.float32) / vae_scaling_factor
  ref = jnp.where(keep_reference[:, None, None, None], ref, 0.0)
  ref = jnp.broadcast_to(ref[:, None], noisy.shape[:2] + ref.shape[1:])
  return jnp.concatenate([pre.scale_input(noisy), ref.astype(noisy.dtype)], axis=-1), pre


def face_loss_weight(face_weight_masks, face_mask_weight: float = 1.0):
  """1 + w M as (B, F, h, w, 1) float32, M the {0, 1} face mask at latent size (records store it
  there, nearest-downsampled as the official F.interpolate(mode='nearest'))."""
  m = jnp.asarray(face_weight_masks, jnp.float32)
  return 1.0 + face_mask_weight * m[..., None]


class NoisyInputs(NamedTuple):
  """What one step's U-Net call takes, from a batch and the draws (`noisy_inputs`)."""
  x0: jax.Array              # (B, F, h, w, c) float32, the clean latents
  noisy: jax.Array           # x0 + sigma eps
  sample: jax.Array          # the U-Net input (B, F, h, w, 2c): c_in x_sigma, reference latents
  pre: Any                   # the EDM Preconditioning of sigma (timestep = c_noise, to_x0)
  added_time_ids: jax.Array  # (B, 3)
  keep_clip: jax.Array       # (B,) bool: the conditioning dropout's CLIP mask


def noisy_inputs(batch, draws: Draws, cfg: ObjectiveConfig) -> NoisyInputs:
  """The noised latents and the U-Net input of a batch (video_latents, reference_latents), with
  the conditioning dropout of draws.r applied to the reference latents."""
  x0 = batch["video_latents"].astype(jnp.float32)
  b = x0.shape[0]
  sigma = draws.sigma.astype(jnp.float32)
  noisy = x0 + sigma.reshape((b,) + (1,) * (x0.ndim - 1)) * draws.noise
  keep_clip, keep_ref = conditioning_dropout(draws.r, cfg.conditioning_dropout)
  x, pre = model_input(noisy, sigma, batch["reference_latents"], keep_ref, cfg.vae_scaling_factor)
  ids = jnp.broadcast_to(jnp.asarray(cfg.added_time_ids, jnp.float32), (b, 3))
  return NoisyInputs(x0, noisy, x, pre, ids, keep_clip)


def pixel_condition(images):
  """Records keep per-frame condition images (skeletons, dense maps) as uint8; networks take
  [-1, 1]."""
  images = jnp.asarray(images)
  if images.dtype == jnp.uint8:
    return images.astype(jnp.float32) / 127.5 - 1.0
  return images


def check_batch(batch, fields, method: str) -> None:
  missing = [k for k in fields if k not in batch]
  if missing:
    raise ValueError(f"{method} batch: missing {missing}; it has {sorted(batch)}")


def stableanimator_loss(network, batch, draws: Draws, cfg: ObjectiveConfig):
  """(loss, metrics) of one batch. network(sample, c_noise, clip_embeds, id_embeds, pose_images,
  added_time_ids, keep_clip) -> the U-Net's raw output (StableAnimator.__call__ through apply).

  metrics: 'edm_loss' (the lambda-weighted MSE over every element) and 'face_loss' (its extra
  face-mask part); loss = edm_loss + face_loss."""
  check_batch(batch, BATCH_FIELDS, "StableAnimator")
  n = noisy_inputs(batch, draws, cfg)
  out = network(n.sample, n.pre.timestep, batch["clip_embeds"], batch["id_embeds"],
                pixel_condition(batch["pose_images"]), n.added_time_ids, n.keep_clip)
  return weighted_denoising_loss(n, out, draws.sigma, batch.get("face_weight_masks"),
                                 cfg.face_mask_weight)


def weighted_denoising_loss(n: NoisyInputs, out, sigma, face_weight_masks, face_mask_weight):
  """(edm_loss + face_loss, {'edm_loss', 'face_loss'}) of the U-Net output `out`; no face part
  when face_weight_masks is None."""
  x0_hat = n.pre.to_x0(n.noisy, out.astype(jnp.float32))
  sigma = sigma.astype(jnp.float32)
  edm = losses.edm_denoising_loss(x0_hat, n.x0, sigma)
  if face_weight_masks is None:
    return edm, {"edm_loss": edm, "face_loss": jnp.zeros_like(edm)}
  weight = face_loss_weight(face_weight_masks, face_mask_weight)
  loss = losses.edm_denoising_loss(x0_hat, n.x0, sigma, weight=weight)
  return loss, {"edm_loss": edm, "face_loss": loss - edm}
