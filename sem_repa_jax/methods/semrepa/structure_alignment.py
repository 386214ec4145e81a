"""Structure Alignment Module (SemanticREPA sec. 4.2.1): a CogVideoX transformer with fewer layers
that maps video latents to depth latents (VAE latents of the colorized teacher depth).

It is the same module as the backbone (one mechanism, many configs): no text tokens, in and out
channels equal to the latent channels, and the timestep (0 for the clean formulation, t for the
noisy one) through the usual AdaLN modulation.
"""
import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from sem_repa_jax.models.cogvideox.transformer import CogVideoXTransformer3D, CogVideoXTransformerConfig


def structure_alignment_config(backbone: CogVideoXTransformerConfig, num_layers: int,
                               latent_channels: int | None = None) -> CogVideoXTransformerConfig:
  """The backbone's widths and positional scheme at a reduced depth, latents in and out.

  A learned positional table (5b-I2V) is tied to 226 text tokens, so the module uses the rotary
  embedding alone there.
  """
  c = latent_channels or backbone.out_channels
  if num_layers < 1:
    raise ValueError(f"structure alignment num_layers={num_layers}: expected >= 1")
  return dataclasses.replace(backbone, num_layers=num_layers, in_channels=c, out_channels=c,
                             use_learned_positional_embeddings=False, ofs_embed_dim=None)


class StructureAlignmentModule(nn.Module):
  """apply(v, video_latents (B,f,h,w,C), timestep (B,)) -> depth latents (B,f,h,w,C)."""
  config: CogVideoXTransformerConfig
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  attention: str = "xla"
  remat_policy: str = "none"

  @nn.compact
  def __call__(self, video_latents, timestep):
    return CogVideoXTransformer3D(self.config, self.dtype, self.param_dtype, self.attention,
                                  self.remat_policy, name="transformer")(
        video_latents, None, timestep)
