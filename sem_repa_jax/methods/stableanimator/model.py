"""StableAnimator's three networks under one variable tree, as it trains and samples them.

params/unet          the SVD U-Net with the distribution-aware ID adapter (extra_context_tokens 4,
                     id_alignment 'distribution'); conversion kind svd-unet
params/pose_net      PoseNet (skeleton images -> features added after conv_in); kind pose-net
params/face_encoder  FusionFaceId (ArcFace + CLIP embeddings -> 4 face tokens); kind face-encoder

`denoise` is one U-Net call given the conditioning. `keep_clip` (B,) drops the CLIP token of the
context (training's conditioning dropout); the face encoder always sees the CLIP embedding itself,
as the official train.py (it encodes the un-dropped image embedding).
"""
from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from sem_repa_jax.methods.stableanimator.conditioning import stableanimator_context
from sem_repa_jax.methods.stableanimator.face_encoder import FaceEncoderConfig, FusionFaceId
from sem_repa_jax.methods.stableanimator.posenet import PoseNet, PoseNetConfig
from sem_repa_jax.models import load_pretrained
from sem_repa_jax.models.svd.unet import UNetSpatioTemporal, UNetSpatioTemporalConfig

MODULES = ("unet", "pose_net", "face_encoder")
# The official trainable set: PoseNet, the face encoder and every U-Net parameter whose name
# contains 'attentions' (spatial and temporal transformers, the ID adapter included).
OFFICIAL_TRAINABLE = ("params/pose_net/*", "params/face_encoder/*", "params/unet/*attentions_*")


class StableAnimator(nn.Module):
  unet_config: UNetSpatioTemporalConfig
  pose_net_config: PoseNetConfig = PoseNetConfig()
  face_encoder_config: FaceEncoderConfig = FaceEncoderConfig()
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  attention: str = "xla"
  remat_policy: str = "none"

  def setup(self):
    u, f, p = self.unet_config, self.face_encoder_config, self.pose_net_config
    problems = []
    if u.extra_context_tokens != f.num_tokens:
      problems.append(f"unet.extra_context_tokens {u.extra_context_tokens} != face_encoder."
                      f"num_tokens {f.num_tokens}")
    if u.cross_attention_dim[0] != f.cross_attention_dim:
      problems.append(f"unet.cross_attention_dim {u.cross_attention_dim[0]} != face_encoder."
                      f"cross_attention_dim {f.cross_attention_dim}")
    if p.out_channels != u.block_out_channels[0]:
      problems.append(f"pose_net.out_channels {p.out_channels} != unet."
                      f"block_out_channels[0] {u.block_out_channels[0]}")
    if problems:
      raise ValueError("StableAnimator: " + "; ".join(problems))
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    self.unet = UNetSpatioTemporal(u, attention=self.attention, remat_policy=self.remat_policy,
                                   **kw)
    self.pose_net = PoseNet(p, **kw)
    self.face_encoder = FusionFaceId(f, **kw)

  def conditioning(self, clip_embeds, id_embeds, pose_images, keep_clip=None):
    """(context (B, 1 + 4, D), pose_features (B, F, h, w, C0)). clip_embeds (B, D) or (B, 1, D);
    id_embeds (B, 512) raw ArcFace; pose_images (B, F, H, W, 3) in [-1, 1]; keep_clip (B,) bool
    or None (keep)."""
    if clip_embeds.ndim == 2:
      clip_embeds = clip_embeds[:, None]
    face_tokens = self.face_encoder(id_embeds, clip_embeds)
    if keep_clip is not None:
      clip_embeds = jnp.where(keep_clip[:, None, None], clip_embeds, 0.0)
    return (stableanimator_context(clip_embeds.astype(self.dtype), face_tokens),
            self.pose_net(pose_images))

  def denoise(self, sample, timestep, context, added_time_ids, pose_features: Optional[Any]):
    """The U-Net's raw output F(c_in x, c_noise | ...) (EDM v-parameterization)."""
    return self.unet(sample, timestep, context, added_time_ids, pose_features)

  def __call__(self, sample, timestep, clip_embeds, id_embeds, pose_images, added_time_ids,
               keep_clip=None):
    context, pose = self.conditioning(clip_embeds, id_embeds, pose_images, keep_clip)
    return self.denoise(sample, timestep, context, added_time_ids, pose)


def adapter_source(name: str) -> Optional[str]:
  """For loading an SVD U-Net without the ID adapter: the official initialization of every
  attn2 id_to_k / id_to_v as a copy of its to_k / to_v (load_into's `derive`)."""
  for group in ("k", "v"):
    marker = f"/attn2/to_{group}_id/"
    if marker in name:
      return name.replace(marker, f"/attn2/to_{group}/")
  return None


def load_stableanimator(unet_dir: str, pose_net_dir: str, face_encoder_dir: str, **module_kwargs):
  """(StableAnimator, variables) from the three converted folders (python -m conversion svd-unet
  with the adapter, pose-net, face-encoder, or train_animator's export/); module_kwargs: dtype,
  attention, remat_policy. A U-Net without the ID adapter is an error (StableAnimator.setup)."""
  parts = {name: load_pretrained(path) for name, path in
           (("unet", unet_dir), ("pose_net", pose_net_dir), ("face_encoder", face_encoder_dir))}
  model = StableAnimator(parts["unet"][0].config, parts["pose_net"][0].config,
                         parts["face_encoder"][0].config, **module_kwargs)
  return model, {"params": {name: v["params"] for name, (_, v) in parts.items()}}
