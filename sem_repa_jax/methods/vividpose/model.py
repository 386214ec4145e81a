"""VividPose's denoiser: the SVD U-Net with reference attention, the identity-aware controller and
the geometry-aware pose controller, under one variable tree.

params/unet             SVD U-Net (kind svd-unet) with VividPose's ID group: extra_context_tokens
                        N (the ID tokens), id_in_temporal, id_zero_init
params/pose_controller  PoseController: dense_encoder + skeleton_encoder (kind
                        vividpose-pose-controller)
params/id_controller    IDController: ArcFace -> N tokens (kind vividpose-id-controller)

The ReferenceNet (an SD 2.1 U-Net, kind sd-unet) is not in this tree: its features are computed
once per sample (reference.reference_net_features) and passed in, so a sampler keeps them out of
its loop and a training step differentiates through both calls.

    context = [CLIP image token, IDController(ArcFace)]    (no ArcFace: N zero tokens, whose
                                                            bias-free k/v make the ID branch 0)
    sample[..., :latent] += PoseController(dense, skeleton)  (the scaled noisy latent; the image
                                                            latents after it are left alone)
    out = unet(sample, c_noise, context, added_time_ids, reference_features=...)
New controllers (zero convs, zero to_v_id) and no reference features give exactly the SVD U-Net.
"""
import dataclasses
from dataclasses import dataclass
from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from sem_repa_jax.methods.vividpose.id_controller import IDController, IDControllerConfig
from sem_repa_jax.methods.vividpose.pose_controller import PoseController, PoseControllerConfig
from sem_repa_jax.methods.vividpose.reference import check_reference_net
from sem_repa_jax.models import load_pretrained
from sem_repa_jax.models.sd import unet_config as sd_config
from sem_repa_jax.models.sd.unet import UNet2DConditionModel
from sem_repa_jax.models.svd.unet import PRESETS as SVD_PRESETS
from sem_repa_jax.models.svd.unet import UNetSpatioTemporal, UNetSpatioTemporalConfig

MODULES = ("unet", "pose_controller", "id_controller")


def vividpose_unet(base: UNetSpatioTemporalConfig, id_tokens: int = 4) -> UNetSpatioTemporalConfig:
  """An SVD U-Net config with VividPose's ID branch: N extra context tokens in every spatial and
  temporal cross-attention, their to_v_id starting at zero."""
  return dataclasses.replace(base, extra_context_tokens=id_tokens, id_alignment="none",
                             id_in_temporal=True, id_zero_init=True)


@dataclass(frozen=True)
class VividPoseConfig:
  """The four networks' configs and the clip geometry the paper trains at."""
  unet: UNetSpatioTemporalConfig
  reference_net: Any                       # models/sd UNet2DConditionConfig
  pose_controller: PoseControllerConfig = PoseControllerConfig()
  id_controller: IDControllerConfig = IDControllerConfig()
  num_frames: int = 14
  height: int = 768
  width: int = 512

  def __post_init__(self):
    check_reference_net(self.reference_net, self.unet)


_TINY_SVD = UNetSpatioTemporalConfig(
    block_out_channels=(32, 64),
    down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
    up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
    layers_per_block=1, num_attention_heads=(2, 4), cross_attention_dim=32,
    addition_time_embed_dim=8, projection_class_embeddings_input_dim=24, num_frames=3)
_TINY_SD = sd_config.UNet2DConditionConfig(
    block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), layers_per_block=1,
    attention_head_dim=(2, 4), cross_attention_dim=32, sample_size=8)
PRESETS = {
    # The paper: SVD-img2vid denoiser, SD 2.1 ReferenceNet, 14 frames, "512x768" (read as width
    # x height: portrait TikTok / UBCFashion frames).
    "vividpose": VividPoseConfig(vividpose_unet(SVD_PRESETS["svd"]), sd_config.PRESETS["sd21"]),
    "tiny": VividPoseConfig(
        vividpose_unet(_TINY_SVD), _TINY_SD,
        PoseControllerConfig(widths=(8, 8, 16, 16, 16, 16, 32), attention_head_dim=16),
        IDControllerConfig(id_embeddings_dim=16, hidden_dim=32, cross_attention_dim=32),
        num_frames=3, height=64, width=48),
}


class VividPose(nn.Module):
  unet_config: UNetSpatioTemporalConfig
  pose_controller_config: PoseControllerConfig = PoseControllerConfig()
  id_controller_config: IDControllerConfig = IDControllerConfig()
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  attention: str = "xla"
  remat_policy: str = "none"

  def setup(self):
    u, i, p = self.unet_config, self.id_controller_config, self.pose_controller_config
    problems = []
    if u.extra_context_tokens != i.num_tokens:
      problems.append(f"unet.extra_context_tokens {u.extra_context_tokens} != id_controller."
                      f"num_tokens {i.num_tokens}")
    if u.cross_attention_dim[0] != i.cross_attention_dim:
      problems.append(f"unet.cross_attention_dim {u.cross_attention_dim[0]} != id_controller."
                      f"cross_attention_dim {i.cross_attention_dim}")
    if p.out_channels != u.out_channels:
      problems.append(f"pose_controller.out_channels {p.out_channels} != unet.out_channels "
                      f"{u.out_channels} (F_p is added to the noisy latent)")
    if problems:
      raise ValueError("VividPose: " + "; ".join(problems))
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    self.unet = UNetSpatioTemporal(u, attention=self.attention, remat_policy=self.remat_policy,
                                   **kw)
    self.pose_controller = PoseController(p, self.attention, self.remat_policy, **kw)
    self.id_controller = IDController(i, **kw)

  def context(self, clip_embeds, id_embedding=None, keep_clip=None):
    """[CLIP token, N ID tokens] (B, 1 + N, D). clip_embeds (B, D) or (B, 1, D); id_embedding
    (B, 512) ArcFace or None (N zero tokens: the ID branch then adds exactly 0); keep_clip (B,)
    bool or None: training's conditioning dropout, zeroing the CLIP token and the ID tokens of
    the rows it drops (the unconditional context: zero CLIP token, no ID embedding)."""
    if clip_embeds.ndim == 2:
      clip_embeds = clip_embeds[:, None]
    n, d = self.unet_config.extra_context_tokens, self.unet_config.cross_attention_dim[0]
    if clip_embeds.ndim != 3 or clip_embeds.shape[1:] != (1, d):
      raise ValueError(f"clip_embeds must be (B, {d}) or (B, 1, {d}), got {clip_embeds.shape}")
    b = clip_embeds.shape[0]
    if id_embedding is None:
      tokens = jnp.zeros((b, n, d), self.dtype)
    else:
      if id_embedding.shape[0] != b:
        raise ValueError(f"id_embedding has {id_embedding.shape[0]} rows for {b} clip_embeds")
      tokens = self.id_controller(id_embedding)
    context = jnp.concatenate([clip_embeds.astype(self.dtype), tokens.astype(self.dtype)], axis=1)
    if keep_clip is not None:
      context = jnp.where(keep_clip[:, None, None], context, jnp.zeros((), context.dtype))
    return context

  def pose_condition(self, sample, dense_maps=None, skeleton_maps=None) -> Optional[Any]:
    """F_p (B, F, h, w, latent channels) or None (no maps); maps at the pixel size of sample."""
    k = self.pose_controller_config.compression
    want = (sample.shape[0], sample.shape[1], k * sample.shape[2], k * sample.shape[3])
    for kind, maps in (("dense_maps", dense_maps), ("skeleton_maps", skeleton_maps)):
      if maps is not None and tuple(maps.shape[:4]) != want:
        raise ValueError(f"{kind} must be {want + (self.pose_controller_config.in_channels,)} "
                         f"(B, F and {k}x the latent size of sample {sample.shape}), got "
                         f"{maps.shape}")
    return self.pose_controller(dense_maps, skeleton_maps)

  def __call__(self, sample, timestep, clip_embeds, added_time_ids, reference_features=None,
               id_embedding=None, dense_maps=None, skeleton_maps=None, image_only_indicator=None,
               keep_clip=None):
    """The U-Net's raw output F (B, F, h, w, 4) (EDM v-parameterization, as the SVD U-Net).

    sample (B, F, h, w, 8): c_in * noisy latents, then the image latents (as SVD); timestep (B,)
    c_noise; clip_embeds (B, D) or (B, 1, D); added_time_ids (B, 3); reference_features: the
    ReferenceNet's token sets (reference.reference_net_features) or None; id_embedding (B, 512)
    or None; dense_maps / skeleton_maps (B, F, 8h, 8w, 3) in [-1, 1] or None; keep_clip (B,)
    bool or None: see `context`."""
    context = self.context(clip_embeds, id_embedding, keep_clip)
    pose = self.pose_condition(sample, dense_maps, skeleton_maps)
    return self.denoise(sample, timestep, context, added_time_ids, pose, reference_features,
                        image_only_indicator)

  def denoise(self, sample, timestep, context, added_time_ids, pose=None,
              reference_features=None, image_only_indicator=None):
    """The U-Net call of __call__ with the conditions computed once outside a sampling loop:
    context = self.context(...) (B, 1 + N, D), pose = F_p of self.pose_condition (B, F, h, w, 4)
    or None."""
    if pose is not None:
      c = pose.shape[-1]
      sample = jnp.concatenate([sample[..., :c] + pose.astype(sample.dtype), sample[..., c:]], -1)
    return self.unet(sample, timestep, context, added_time_ids,
                     image_only_indicator=image_only_indicator,
                     reference_features=reference_features)


def build_models(config: VividPoseConfig, **module_kwargs):
  """(VividPose, ReferenceNet) modules of a config; module_kwargs: dtype, param_dtype, attention,
  remat_policy (both modules)."""
  return (VividPose(config.unet, config.pose_controller, config.id_controller, **module_kwargs),
          UNet2DConditionModel(config.reference_net, **module_kwargs))


def example_inputs(config: VividPoseConfig, batch: int = 1, frames: int = 1, side: int = 1):
  """Zero inputs that create every parameter (both map kinds, an ID embedding), at latent size
  side x 2^(levels - 1)."""
  u, p = config.unet, config.pose_controller
  h = side * 2 ** (len(u.block_out_channels) - 1)
  maps = jnp.zeros((batch, frames, p.compression * h, p.compression * h, p.in_channels))
  return dict(sample=jnp.zeros((batch, frames, h, h, u.in_channels)),
              timestep=jnp.zeros((batch,)),
              clip_embeds=jnp.zeros((batch, u.cross_attention_dim[0])),
              added_time_ids=jnp.zeros((batch, u.num_added_time_ids)),
              id_embedding=jnp.zeros((batch, config.id_controller.id_embeddings_dim)),
              dense_maps=maps, skeleton_maps=maps)


def load_vividpose(unet_dir: str, pose_controller_dir: str, id_controller_dir: str,
                   **module_kwargs):
  """(VividPose, variables) from three saved folders (kinds svd-unet with the ID group,
  vividpose-pose-controller, vividpose-id-controller)."""
  parts = {name: load_pretrained(path) for name, path in
           (("unet", unet_dir), ("pose_controller", pose_controller_dir),
            ("id_controller", id_controller_dir))}
  model = VividPose(parts["unet"][0].config, parts["pose_controller"][0].config,
                    parts["id_controller"][0].config, **module_kwargs)
  return model, {"params": {name: v["params"] for name, (_, v) in parts.items()}}
