"""The conditioning StableAnimator's U-Net takes: context = [CLIP image embedding, face tokens]
(B, 1 + 4, 1024), and the PoseNet features of the driving skeletons (B, F, h, w, 320).

The unconditional half of classifier-free guidance (inference) is the zero context and no pose
features, as the official pipeline; training drops the CLIP token alone (face tokens and pose are
never dropped), so both belong to the caller.
"""
import jax.numpy as jnp


def stableanimator_context(clip_embeds, face_tokens):
  """(B, 1, D) or (B, D) CLIP image embedding, (B, N, D) face tokens -> (B, 1 + N, D), the CLIP
  token first: the U-Net's extra_context_tokens N are the last N."""
  if clip_embeds.ndim == 2:
    clip_embeds = clip_embeds[:, None]
  if (clip_embeds.ndim != 3 or face_tokens.ndim != 3 or clip_embeds.shape[1] != 1
      or clip_embeds.shape[::2] != face_tokens.shape[::2]):
    raise ValueError(f"stableanimator_context: clip_embeds (B, 1, D) and face_tokens (B, N, D) "
                     f"expected, got {clip_embeds.shape} and {face_tokens.shape}")
  return jnp.concatenate([clip_embeds, face_tokens.astype(clip_embeds.dtype)], axis=1)


def stableanimator_conditioning(pose_net, pose_net_vars, face_encoder, face_encoder_vars, *,
                                clip_embeds, id_embeds, pose_images):
  """(context (B, 5, D), pose_features (B, F, H/8, W/8, C0)) for UNetSpatioTemporal.apply
  (encoder_hidden_states=context, pose_features=pose_features).

  clip_embeds (B, 1, D) or (B, D): the reference's CLIP image embedding; id_embeds (B, 512): the
  reference face's ArcFace (antelopev2) embedding, raw; pose_images (B, F, H, W, 3) in [-1, 1].
  """
  if clip_embeds.ndim == 2:
    clip_embeds = clip_embeds[:, None]
  face_tokens = face_encoder.apply(face_encoder_vars, id_embeds, clip_embeds)
  pose_features = pose_net.apply(pose_net_vars, pose_images)
  return stableanimator_context(clip_embeds, face_tokens), pose_features
