"""The three networks of SemanticREPA under one variable tree, for both training stages.

params/transformer          the CogVideoX backbone (stage 2 only; fine-tuned)
params/structure_alignment  SAM (trained in stage 1, frozen in stage 2)
params/id_alignment         IDM (trained in stage 1, frozen in stage 2)
"""
from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from sem_repa_jax.models.cogvideox.transformer import CogVideoXTransformer3D, CogVideoXTransformerConfig
from sem_repa_jax.methods.semrepa.id_alignment import IDAlignmentConfig, IDAlignmentModule
from sem_repa_jax.methods.semrepa.structure_alignment import StructureAlignmentModule

ALIGNMENT_MODULES = ("structure_alignment", "id_alignment")
ALIGNMENT_PREFIXES = tuple(f"params/{m}" for m in ALIGNMENT_MODULES)


class SemanticREPA(nn.Module):
  structure: CogVideoXTransformerConfig
  identity: IDAlignmentConfig
  backbone: Optional[CogVideoXTransformerConfig] = None   # None: stage 1 (alignment modules only)
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  attention: str = "xla"
  remat_policy: str = "none"

  def setup(self):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, attention=self.attention,
              remat_policy=self.remat_policy)
    if self.backbone is not None:
      self.transformer = CogVideoXTransformer3D(self.backbone, **kw)
    self.structure_alignment = StructureAlignmentModule(self.structure, **kw)
    self.id_alignment = IDAlignmentModule(self.identity, dtype=self.dtype,
                                          param_dtype=self.param_dtype)

  def denoise(self, latents, text_embeds, timestep, ofs=None):
    """The backbone's v-prediction for (noisy latents [+ image latents on channels])."""
    return self.transformer(latents, text_embeds, timestep, ofs)

  def predict_depth(self, video_latents, timestep):
    return self.structure_alignment(video_latents, timestep)

  def predict_identity(self, video_latents, depth_latents):
    return self.id_alignment(video_latents, depth_latents if self.identity.use_depth else None)

  def __call__(self, video_latents, timestep, model_input=None, text_embeds=None, ofs=None):
    """Touches every network once (for init); model_input is the backbone's input."""
    d = self.predict_depth(video_latents, timestep)
    e = self.predict_identity(video_latents, d)
    if self.backbone is None:
      return d, e
    return self.denoise(model_input, text_embeds, timestep, ofs), d, e
