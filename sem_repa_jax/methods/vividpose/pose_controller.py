"""VividPose's geometry-aware pose controller: SMPL-X render maps and skeleton maps -> F_p.

    per map kind (dense SMPL-X rendering, sparse DWPose skeleton), an encoder E:
      maps (B, F, H, W, 3) in [-1, 1] -> convs + SiLU (three stride-2, H/8 x W/8)
        -> self-attention blocks over the h*w tokens of each frame (pre-LayerNorm, residual)
        -> zero convolution (1x1, weights and bias zero) to the latent channels
    F_p = E_d(dense) + E_s(skeleton)                         (Eq. 5), added to the noisy latent

The paper gives the encoders as "a set of convolutional layers and self-attention layers" with
"zero convolution layers at the end", "lightweight"; widths, strides and the number of attention
layers are not given. The convs here are StableAnimator's PoseNet layout (16..128 channels, 4x4
stride-2 convs at the 2nd, 4th and 6th layer) followed by `attention_layers` self-attention
blocks at the latent resolution, heads of `attention_head_dim` channels. Either map kind may be
absent (the paper's ablations drop one), both absent: no pose condition.
"""
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from sem_repa_jax.models.config_fields import from_fields
from sem_repa_jax.nn.attention_layers import Attention
from sem_repa_jax.nn.convs import VIDEO_AXES, Conv2D
from sem_repa_jax.nn.norms import LayerNorm
from sem_repa_jax.nn.partitioning import as_dtype
from sem_repa_jax.nn.stacking import remat

# PoseNet's initialization of the convs: normal with std sqrt(2 / fan_in), zero biases.
_HE_NORMAL = nn.initializers.variance_scaling(2.0, "fan_in", "normal")
# Replicated: widths such as 3 that no mesh axis divides, and a few hundred thousand parameters.
_CONV_AXES = dict(kernel_axes=(None, None, None, None))
MAP_KINDS = ("dense", "skeleton")   # the encoders' names: dense_encoder, skeleton_encoder


@dataclass(frozen=True)
class PoseControllerConfig:
  """One config for both encoders. widths[i]: channels of conv i; downsample[i]: conv i is 4x4
  stride 2 (else 3x3); out_channels: the latent channels F_p is added to."""
  in_channels: int = 3
  widths: tuple = (16, 16, 32, 32, 64, 64, 128)
  downsample: tuple = (False, True, False, True, False, True, False)
  attention_layers: int = 1
  attention_head_dim: int = 64
  out_channels: int = 4

  def __post_init__(self):
    object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
    object.__setattr__(self, "downsample", tuple(bool(d) for d in self.downsample))
    problems = []
    if len(self.widths) != len(self.downsample) or not self.widths:
      problems.append(f"{len(self.widths)} widths for {len(self.downsample)} downsample flags; "
                      "one of each per conv")
    elif self.attention_layers and self.widths[-1] % self.attention_head_dim:
      problems.append(f"last width {self.widths[-1]} is not a multiple of attention_head_dim "
                      f"{self.attention_head_dim}")
    if self.attention_layers < 0:
      problems.append(f"attention_layers {self.attention_layers} < 0")
    if problems:
      raise ValueError("VividPose pose controller config: " + "; ".join(problems))

  @property
  def compression(self) -> int:
    """How much smaller the output is than the maps on each side (8: the VAE's)."""
    return 2 ** sum(self.downsample)


class SelfAttentionBlock(nn.Module):
  """`(x (N, L, C)) -> x + attn(LayerNorm(x))`, self-attention over the L tokens of each row."""
  heads: int
  attention: str = "xla"
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    h = LayerNorm(1e-5, True, "embed", self.dtype, self.param_dtype, name="norm")(x)
    return x + Attention(self.heads, x.shape[-1] // self.heads, implementation=self.attention,
                         dtype=self.dtype, param_dtype=self.param_dtype, name="attn")(h)


class PoseEncoder(nn.Module):
  """`(maps (B, F, H, W, in_channels)) -> (B, F, H/8, W/8, out_channels)`; exactly 0 when new."""
  config: PoseControllerConfig = PoseControllerConfig()
  attention: str = "xla"
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, maps):
    c = self.config
    x = maps.astype(self.dtype)
    for i, (width, down) in enumerate(zip(c.widths, c.downsample)):
      x = nn.silu(Conv2D(width, (4, 4) if down else (3, 3), strides=2 if down else 1, padding=1,
                         kernel_init=_HE_NORMAL, dtype=self.dtype, param_dtype=self.param_dtype,
                         name=f"conv_{i}", **_CONV_AXES)(x))
    b, f, h, w, ch = x.shape
    tokens = x.reshape(b * f, h * w, ch)
    for i in range(c.attention_layers):
      tokens = SelfAttentionBlock(ch // c.attention_head_dim, self.attention, self.dtype,
                                  self.param_dtype, name=f"attentions_{i}")(tokens)
    x = tokens.reshape(b, f, h, w, ch)
    # The zero convolution: a new encoder adds exactly nothing to the latent.
    x = Conv2D(c.out_channels, (1, 1), padding=0, kernel_init=nn.initializers.zeros,
               dtype=self.dtype, param_dtype=self.param_dtype, name="zero_conv", **_CONV_AXES)(x)
    return nn.with_logical_constraint(x, VIDEO_AXES)


class PoseController(nn.Module):
  """`(dense_maps, skeleton_maps) -> F_p (B, F, H/8, W/8, out_channels)` or None when both are
  None; maps (B, F, H, W, in_channels) in [-1, 1], H and W multiples of 8."""
  config: PoseControllerConfig = PoseControllerConfig()
  attention: str = "xla"
  remat_policy: str = "none"
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, dense_maps=None, skeleton_maps=None):
    c = self.config
    shapes = {k: m.shape for k, m in zip(MAP_KINDS, (dense_maps, skeleton_maps)) if m is not None}
    for kind, shape in shapes.items():
      if len(shape) != 5 or shape[-1] != c.in_channels:
        raise ValueError(f"{kind}_maps must be (B, F, H, W, {c.in_channels}), got {shape}")
      if shape[2] % c.compression or shape[3] % c.compression:
        raise ValueError(f"{kind}_maps: {shape[2]}x{shape[3]} is not a multiple of "
                         f"{c.compression} (the latent grid)")
    if len(set(shapes.values())) > 1:
      raise ValueError(f"dense_maps {shapes['dense']} and skeleton_maps {shapes['skeleton']} "
                       "differ in shape")
    encoder = remat(PoseEncoder, self.remat_policy)
    out = None
    for kind, maps in zip(MAP_KINDS, (dense_maps, skeleton_maps)):
      if maps is not None:
        e = encoder(c, self.attention, self.dtype, self.param_dtype, name=f"{kind}_encoder")(maps)
        out = e if out is None else out + e
    return out


def build(config: dict, dtype="float32", param_dtype="float32", attention: str = "xla",
          remat_policy: str = "none") -> PoseController:
  """Factory of kind 'vividpose-pose-controller' (load_pretrained): JSON kwargs."""
  if not isinstance(config, PoseControllerConfig):
    config = from_fields(PoseControllerConfig, config, "VividPose pose controller")
  return PoseController(config, attention, remat_policy, as_dtype(dtype), as_dtype(param_dtype))
