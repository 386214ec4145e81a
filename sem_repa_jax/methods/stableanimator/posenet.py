"""StableAnimator's PoseNet: skeleton images -> features added to the SVD U-Net after conv_in.

    x = pose images in [-1, 1], (B, F, H, W, 3) channels-last (frames folded into the batch)
    8 x (Conv2D, SiLU): widths 3, 16, 16, 32, 32, 64, 64, 128; the 2nd, 4th and 6th are 4x4 stride 2
      (padding 1), the others 3x3 (padding 1): H/8 x W/8
    out = final_proj (1x1 conv to the U-Net's first width, zero-initialized) * scale (init 2.0)

Flax names keep the official indices of its nn.Sequential (conv_layers_0, _2, ... _14: the SiLUs
sit at the odd indices), final_proj and scale, so the converter maps names one to one.
"""
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from sem_repa_jax.models.config_fields import from_fields
from sem_repa_jax.nn.convs import VIDEO_AXES, Conv2D
from sem_repa_jax.nn.partitioning import as_dtype, param


# The official initialization of the convs: normal with std sqrt(2 / fan_in), zero biases.
_HE_NORMAL = nn.initializers.variance_scaling(2.0, "fan_in", "normal")


@dataclass(frozen=True)
class PoseNetConfig:
  """widths[i]: output channels of conv i; downsample[i]: conv i is 4x4 stride 2 (else 3x3)."""
  in_channels: int = 3
  widths: tuple = (3, 16, 16, 32, 32, 64, 64, 128)
  downsample: tuple = (False, True, False, True, False, True, False, False)
  out_channels: int = 320   # the U-Net's block_out_channels[0]

  def __post_init__(self):
    object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
    object.__setattr__(self, "downsample", tuple(bool(d) for d in self.downsample))
    if len(self.widths) != len(self.downsample) or not self.widths:
      raise ValueError(f"PoseNet config: {len(self.widths)} widths for {len(self.downsample)} "
                       "downsample flags; one of each per conv")

  @property
  def compression(self) -> int:
    """How much smaller the output is than the pose image on each side (8 for the official)."""
    return 2 ** sum(self.downsample)


class PoseNet(nn.Module):
  """`(pose (B, F, H, W, in_channels) or (N, H, W, in_channels) in [-1, 1]) ->
  (B, F, H/8, W/8, out_channels)` (same leading axes)."""
  config: PoseNetConfig = PoseNetConfig()
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, pose):
    c = self.config
    if pose.ndim not in (4, 5) or pose.shape[-1] != c.in_channels:
      raise ValueError(f"PoseNet takes pose images (B, F, H, W, {c.in_channels}) or "
                       f"(N, H, W, {c.in_channels}), got {pose.shape}")
    if pose.shape[-3] % c.compression or pose.shape[-2] % c.compression:
      raise ValueError(f"PoseNet: pose images {pose.shape[-3]}x{pose.shape[-2]} are not "
                       f"multiples of {c.compression} (the latent grid)")
    x = pose.astype(self.dtype)
    # Replicated: 0.3 M parameters, and widths such as 3 that no tensor axis divides.
    axes = dict(kernel_axes=(None, None, None, None))
    for i, (width, down) in enumerate(zip(c.widths, c.downsample)):
      x = Conv2D(width, (4, 4) if down else (3, 3), strides=2 if down else 1, padding=1,
                 kernel_init=_HE_NORMAL, dtype=self.dtype, param_dtype=self.param_dtype,
                 name=f"conv_layers_{2 * i}", **axes)(x)
      x = nn.silu(x)
    # Zero-initialized (and scale 2.0) as the official: a new PoseNet leaves the U-Net unchanged.
    x = Conv2D(c.out_channels, (1, 1), padding=0, kernel_init=nn.initializers.zeros,
               dtype=self.dtype, param_dtype=self.param_dtype, name="final_proj", **axes)(x)
    scale = param(self, "scale", nn.initializers.constant(2.0), (1,), (None,), self.param_dtype)
    x = x * scale.astype(self.dtype)
    return nn.with_logical_constraint(x, VIDEO_AXES) if x.ndim == 5 else x


def build(config: dict, dtype="float32", param_dtype="float32") -> PoseNet:
  """Factory of kind 'pose-net' (load_pretrained): JSON kwargs."""
  if not isinstance(config, PoseNetConfig):
    config = from_fields(PoseNetConfig, config, "PoseNet")
  return PoseNet(config, dtype=as_dtype(dtype), param_dtype=as_dtype(param_dtype))
