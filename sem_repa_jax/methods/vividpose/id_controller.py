"""VividPose's identity-aware controller: the ArcFace embedding mapped by an MLP to ID tokens.

    F_f (B, 512) -> Linear -> GELU -> Linear -> (B, N, D) -> LayerNorm     D: the CLIP token width

The paper: "we map F_f through an MLP to the same dimension as c", c being SVD's one CLIP image
token; the tokens then enter every cross-attention of the U-Net as the 'id' group of a decoupled
cross-attention (models/svd: extra_context_tokens N, id_in_temporal, id_zero_init). The MLP's
shape is not given; this is IP-Adapter-FaceID's MLPProjModel (512 -> 2 x 512 -> N x D, GELU,
LayerNorm over D) with its 4 tokens. "The same dimension as c" is read as the token width D:
one token would make the new cross-attention a softmax over a single key (weight 1 whatever the
query), so its to_k_id would never get a gradient and the branch would add one vector to every
pixel alike.
"""
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from sem_repa_jax.models.config_fields import from_fields
from sem_repa_jax.nn.dense import dense
from sem_repa_jax.nn.norms import LayerNorm
from sem_repa_jax.nn.partitioning import as_dtype


@dataclass(frozen=True)
class IDControllerConfig:
  id_embeddings_dim: int = 512       # ArcFace
  hidden_dim: int = 1024
  cross_attention_dim: int = 1024    # the U-Net's context width (CLIP image embedding)
  num_tokens: int = 4

  def __post_init__(self):
    bad = [k for k in ("id_embeddings_dim", "hidden_dim", "cross_attention_dim", "num_tokens")
           if getattr(self, k) < 1]
    if bad:
      raise ValueError(f"IDController config: {bad} must be >= 1")


class IDController(nn.Module):
  """`(id_embedding (B, id_embeddings_dim)) -> (B, num_tokens, cross_attention_dim)`."""
  config: IDControllerConfig = IDControllerConfig()
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, id_embedding):
    c = self.config
    if id_embedding.ndim != 2 or id_embedding.shape[-1] != c.id_embeddings_dim:
      raise ValueError(f"IDController takes ArcFace embeddings (B, {c.id_embeddings_dim}), got "
                       f"{id_embedding.shape}")
    x = dense(c.hidden_dim, ("embed", "mlp"), "proj_0", self.dtype,
              self.param_dtype)(id_embedding.astype(self.dtype))
    x = nn.gelu(x, approximate=False)
    x = dense((c.num_tokens, c.cross_attention_dim), ("mlp", None, "embed"), "proj_2", self.dtype,
              self.param_dtype)(x)
    x = LayerNorm(1e-5, True, "embed", self.dtype, self.param_dtype, name="norm")(x)
    return nn.with_logical_constraint(x, ("batch", "length", "embed"))


def build(config: dict, dtype="float32", param_dtype="float32") -> IDController:
  """Factory of kind 'vividpose-id-controller' (load_pretrained): JSON kwargs."""
  if not isinstance(config, IDControllerConfig):
    config = from_fields(IDControllerConfig, config, "VividPose ID controller")
  return IDController(config, dtype=as_dtype(dtype), param_dtype=as_dtype(param_dtype))
