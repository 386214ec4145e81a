"""ID Alignment Module (SemanticREPA sec. 4.2.2): ResNet blocks over video latents, optionally
concatenated on channels with depth latents (the depth acts as an implicit face mask), giving one
L2-normalized face embedding per latent frame.

Each latent frame is processed independently (B*f images), as face identity is a per-frame property;
temporal consistency comes from the teacher targets, not from the architecture.
"""
import dataclasses
from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from sem_repa_jax.nn.convs import Conv2D
from sem_repa_jax.nn.norms import GroupNorm
from sem_repa_jax.nn.resnet import ResnetBlock


@dataclasses.dataclass(frozen=True)
class IDAlignmentConfig:
  latent_channels: int = 16        # channels of one latent (video and depth latents alike)
  use_depth: bool = True           # ablation switch: concat(z, d) vs z alone
  channels: tuple = (128, 256, 512)  # one stage per entry, downsampling x2 between stages
  blocks_per_stage: int = 2
  norm_groups: int = 32
  norm_eps: float = 1e-6
  embed_dim: int = 512             # the teacher's embedding width (ArcFace: 512)

  @property
  def in_channels(self) -> int:
    return self.latent_channels * (2 if self.use_depth else 1)


class IDAlignmentModule(nn.Module):
  config: IDAlignmentConfig
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, video_latents, depth_latents: Optional[jnp.ndarray] = None):
    """(B,f,h,w,C) latents [+ (B,f,h,w,C) depth latents] -> (B,f,embed_dim), unit L2 norm."""
    cfg = self.config
    if video_latents.ndim != 5 or video_latents.shape[-1] != cfg.latent_channels:
      raise ValueError(f"IDAlignmentModule expects video latents (B,f,h,w,{cfg.latent_channels}); "
                       f"got {video_latents.shape}")
    x = video_latents
    if cfg.use_depth:
      if depth_latents is None or depth_latents.shape != video_latents.shape:
        raise ValueError("IDAlignmentModule(use_depth=True) needs depth latents of the video latents' "
                         f"shape {video_latents.shape}; got "
                         f"{None if depth_latents is None else depth_latents.shape}")
      x = jnp.concatenate([x, depth_latents], axis=-1)
    b, f, h, w, c = x.shape
    x = x.reshape(b * f, h, w, c).astype(self.dtype)
    x = nn.with_logical_constraint(x, ("batch", "height", "width", "channels"))
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = Conv2D(cfg.channels[0], name="conv_in", **kw)(x)
    for i, ch in enumerate(cfg.channels):
      for j in range(cfg.blocks_per_stage):
        x, _ = ResnetBlock(ch, cfg.norm_groups, cfg.norm_eps, shortcut_name="shortcut",
                           name=f"stage{i}_block{j}", **kw)(x)
      if i + 1 < len(cfg.channels):
        x = Conv2D(cfg.channels[i + 1], strides=2, name=f"downsample{i}", **kw)(x)
    x = GroupNorm(min(cfg.norm_groups, x.shape[-1]), cfg.norm_eps, dtype=jnp.float32,
                  param_dtype=self.param_dtype, name="norm_out")(x)
    x = nn.silu(x).mean(axis=(1, 2))
    e = nn.Dense(cfg.embed_dim, dtype=jnp.float32, param_dtype=self.param_dtype, name="proj_out",
                 kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(),
                                                          ("embed", "mlp")))(x)
    e = e / jnp.maximum(jnp.linalg.norm(e, axis=-1, keepdims=True), 1e-6)
    return e.reshape(b, f, cfg.embed_dim)
