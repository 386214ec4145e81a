"""VividPose's ReferenceNet: an SD 2.1 U-Net run once per sample on the reference latent, whose
spatial self-attention inputs join the SVD U-Net's (reference attention, the paper's Eq. 1:
K = W_k [z_t, z_ref], V = W_v [z_t, z_ref], the denoiser's own projections).

The features are computed outside the sampling loop (they do not depend on the noisy latent) and
handed to every denoiser call; in training the same function runs inside the loss, so gradients
reach the ReferenceNet (the paper trains it end to end). Block i of the SD U-Net feeds block i of
the SVD U-Net: both enumerate their spatial transformer blocks by diffusers path, and SD 2.1 and
SVD have the same paths and widths (16 blocks: down 0-2 x 2, mid, up 1-3 x 3).
"""
import jax.numpy as jnp

from sem_repa_jax.models.sd.unet import reference_feature_paths, reference_features
from sem_repa_jax.models.svd.unet import spatial_block_paths

# The paper is silent on the ReferenceNet's timestep; AnimateAnyone-style ReferenceNets encode the
# clean reference latent at timestep 0.
REFERENCE_TIMESTEP = 0.0


def check_reference_net(reference_config, unet_config):
  """A one-line error unless the SD U-Net's transformer blocks match the SVD U-Net's spatial ones
  path for path and width for width."""
  ref, den = reference_feature_paths(reference_config), spatial_block_paths(unet_config)
  if ref != den:
    diff = [f"{a} vs {b}" for a, b in zip(ref, den) if a != b][:3]
    raise ValueError(f"ReferenceNet blocks do not match the SVD U-Net's spatial blocks: "
                     f"{len(ref)} vs {len(den)} blocks; (path, width) first differences: "
                     f"{diff or 'one list is longer'}")


def reference_net_features(reference_net, reference_variables, reference_latent, context,
                           timestep=REFERENCE_TIMESTEP) -> tuple:
  """The ReferenceNet's features, one (B, h_l*w_l, C_l) token set per spatial block, in the SVD
  U-Net's `spatial_block_paths` order. reference_latent (B, h, w, 4): the reference image's VAE
  latent, scaled as the denoiser's latents; context (B, T, D) or (B, D): what the ReferenceNet's
  cross-attention reads (VividPose: the CLIP image embedding of the reference)."""
  if context.ndim == 2:
    context = context[:, None]
  t = jnp.full((reference_latent.shape[0],), timestep, jnp.float32)
  _, features = reference_features(reference_net, reference_variables, reference_latent, t,
                                   context)
  return features
