"""VividPose's training objective: the EDM denoising loss of SVD with the ReferenceNet run inside
the step, as pure functions.

  sigma, eps, r ~ StableAnimator's draws (methods/stableanimator/objective.py: the cosine-
                  interpolated logSNR density or EDM's log-normal; dropout uniforms r)
  x_sigma  = x0 + sigma eps                                   x0: the clip's scaled VAE latents
  features = ReferenceNet(reference latent, t = 0 | CLIP image embedding)      differentiable
  input    = concat([c_in x_sigma, reference latents / scaling_factor over every frame], channels)
  D        = c_skip x_sigma + c_out VividPose(input, c_noise | [CLIP, ID tokens(ArcFace)],
             features, dense maps, skeleton maps, [6, 127, 0.02])
  loss     = mean((1 + sigma^2) / sigma^2 (D - x0)^2)         (x (1 + w M) with face masks, w > 0)

The paper (sec. 3-4) gives no loss beyond SVD's EDM training and no dropout. Here: SVD's EDM
L2 on the denoised latent with EDM's lambda weighting, no face term by default (VividPose has none;
objective.face_mask_weight > 0 adds StableAnimator's), and StableAnimator's conditioning dropout
for the same p: per example r < 2p drops the CLIP token and the ID tokens together (the context
the sampler's unconditional half uses: zero CLIP token, no ID embedding), p <= r < 3p the
reference image latents concatenated to the input. The ReferenceNet always sees the reference and
its un-dropped CLIP embedding, and its features are never dropped (as StableAnimator's face
encoder sees the un-dropped CLIP embedding).
"""
from dataclasses import dataclass

import jax

from sem_repa_jax.methods.stableanimator.objective import (Draws, ObjectiveConfig, check_batch,
                                                          noisy_inputs, pixel_condition,
                                                          weighted_denoising_loss)
from sem_repa_jax.methods.vividpose.model import MODULES, VividPose
from sem_repa_jax.methods.vividpose.reference import reference_net_features
from sem_repa_jax.models.sd.unet import UNet2DConditionModel

BATCH_FIELDS = ("video_latents", "reference_latents", "clip_embeds", "id_embeds", "pose_images",
                "dense_maps")
FACE_FIELD = "face_weight_masks"
REFERENCE_NET = "reference_net"   # params/reference_net: the ReferenceNet in the trained tree


def batch_fields(cfg: ObjectiveConfig) -> tuple:
  """The record fields a step reads: the face masks only where the loss weighs them."""
  return BATCH_FIELDS + ((FACE_FIELD,) if cfg.face_mask_weight else ())


@dataclass(frozen=True)
class VividPoseNetworks:
  """The four trained networks under one variable tree: params/{unet, pose_controller,
  id_controller} (VividPose) and params/reference_net (the SD U-Net). `init` creates all of it;
  a call runs the ReferenceNet on the batch's reference and the denoiser on its features."""
  vividpose: VividPose
  reference_net: UNet2DConditionModel

  def init(self, key, sample, timestep, clip_embeds, added_time_ids, id_embedding, dense_maps,
           skeleton_maps, reference_latent):
    k_den, k_ref = jax.random.split(key)
    den = self.vividpose.init(k_den, sample, timestep, clip_embeds, added_time_ids,
                              id_embedding=id_embedding, dense_maps=dense_maps,
                              skeleton_maps=skeleton_maps)
    context = clip_embeds[:, None] if clip_embeds.ndim == 2 else clip_embeds
    ref = self.reference_net.init(k_ref, reference_latent, timestep, context)
    return {"params": {**den["params"], REFERENCE_NET: ref["params"]}}

  def __call__(self, variables, sample, timestep, added_time_ids, batch, keep_clip=None):
    """The U-Net's raw output F (B, F, h, w, 4) for a batch of records' fields."""
    params = variables["params"]
    features = reference_net_features(self.reference_net, {"params": params[REFERENCE_NET]},
                                      batch["reference_latents"], batch["clip_embeds"])
    return self.vividpose.apply(
        {"params": {k: params[k] for k in MODULES}}, sample, timestep, batch["clip_embeds"],
        added_time_ids, reference_features=features, id_embedding=batch["id_embeds"],
        dense_maps=pixel_condition(batch["dense_maps"]),
        skeleton_maps=pixel_condition(batch["pose_images"]), keep_clip=keep_clip)


def vividpose_loss(networks: VividPoseNetworks, variables, batch, draws: Draws,
                   cfg: ObjectiveConfig):
  """(loss, metrics) of one batch: 'edm_loss' (the lambda-weighted MSE over every element) and
  'face_loss' (the face-mask part, 0 unless cfg.face_mask_weight > 0)."""
  check_batch(batch, batch_fields(cfg), "VividPose")
  n = noisy_inputs(batch, draws, cfg)
  out = networks(variables, n.sample, n.pre.timestep, n.added_time_ids, batch, n.keep_clip)
  masks = batch[FACE_FIELD] if cfg.face_mask_weight else None
  return weighted_denoising_loss(n, out, draws.sigma, masks, cfg.face_mask_weight)
