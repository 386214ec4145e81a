"""StableAnimator++'s learnable SVD-guided pose alignment (Sec. III-A): reference and driving
keypoints -> the similarity transform that puts the driving pose onto the reference person.

  svd    = procrustes(driving -> reference) over the points present in both (eqs. 2-7)
  inter  = svd(driving)                                  the intermediate aligned pose (eq. 8)
  main   = Encoder_1(tokens [reference, driving])        one token per keypoint (eq. 1)
  guide  = Encoder_2(tokens [inter])                     (eq. 9)
  main   = 4 x (main + CrossAttention(main, guide); main + FFN(main))   the pose fusion block
  (log s, theta, t) = MLP(masked mean of main)           (eq. 10)
  final  = about(s, theta, t; reference centroid) o svd  applied to body, hands and face (eq. 11)

The network sees coordinates in the reference's frame (minus the centroid of its present points,
over their RMS radius), so it is invariant to where the reference stands and how large it is, and
its translation is predicted in that unit. What the paper leaves open, chosen here: the MLP's
transform is a correction composed after the SVD one, its last layer zero-initialized, so an
untrained aligner is exactly the SVD-only baseline and training starts from it; a missing keypoint
(score 0) is a zero token with a 0 presence flag and is masked as a key in every attention; a
token is present when its point is present in the reference or the driving pose.
Inputs must be in isotropic coordinates (data_pipelines/poses/keypoints.isotropic).
"""
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from sem_repa_jax.methods.pose_alignment import similarity
from sem_repa_jax.models.config_fields import from_fields
from sem_repa_jax.nn.attention_layers import Attention
from sem_repa_jax.nn.dense import Projection, dense
from sem_repa_jax.nn.norms import LayerNorm
from sem_repa_jax.nn.partitioning import as_dtype, param


@dataclass(frozen=True)
class PoseAlignerConfig:
  num_keypoints: int = 18
  width: int = 128
  heads: int = 4
  encoder_layers: int = 2       # each of the two Transformer encoders
  fusion_layers: int = 4        # the pose fusion block's (cross-attention + FFN) modules
  mlp_ratio: int = 4


class _FFN(nn.Module):
  ratio: int
  dtype: Any
  param_dtype: Any

  @nn.compact
  def __call__(self, x):
    d = x.shape[-1]
    h = dense(self.ratio * d, ("embed", "mlp"), "linear_1", self.dtype, self.param_dtype)(x)
    return dense(d, ("mlp", "embed"), "linear_2", self.dtype, self.param_dtype)(nn.gelu(h))


class _Block(nn.Module):
  """Pre-LN: x + Attention(LN(x), LN(context) or self; keys masked), then x + FFN(LN(x))."""
  config: PoseAlignerConfig
  cross: bool
  dtype: Any
  param_dtype: Any

  @nn.compact
  def __call__(self, x, key_mask, context=None):
    c = self.config
    norm = lambda name: LayerNorm(1e-5, True, "embed", self.dtype, self.param_dtype, name=name)  # noqa: E731
    h = norm("norm_1")(x)
    kv = norm("norm_context")(context) if self.cross else None
    x = x + Attention(c.heads, c.width // c.heads, qkv_bias=True, dtype=self.dtype,
                      param_dtype=self.param_dtype, name="attention")(
        h, kv, mask=key_mask[:, None, None, :])
    return x + _FFN(c.mlp_ratio, self.dtype, self.param_dtype, name="ffn")(norm("norm_2")(x))


class _Encoder(nn.Module):
  config: PoseAlignerConfig
  dtype: Any
  param_dtype: Any

  @nn.compact
  def __call__(self, tokens, present):
    c = self.config
    x = dense(c.width, (None, "embed"), "embed_tokens", self.dtype, self.param_dtype)(tokens)
    x = x + param(self, "keypoint_embedding", nn.initializers.normal(0.02),
                  (c.num_keypoints, c.width), (None, "embed"), self.param_dtype).astype(self.dtype)
    for i in range(c.encoder_layers):
      x = _Block(c, False, self.dtype, self.param_dtype, name=f"layers_{i}")(x, present)
    return x


def reference_frame(reference, reference_scores):
  """(centroid (..., 2), RMS radius (...,)) of the reference's present points; radius 1 when it
  has fewer than two."""
  w = (reference_scores > 0).astype(jnp.float32)
  center = similarity.weighted_centroid(reference, w)
  spread = (w * jnp.square(reference - center[..., None, :]).sum(-1)).sum(-1)
  n = w.sum(-1)
  radius = jnp.sqrt(spread / jnp.maximum(n, 1.0))
  return center, jnp.where((n >= 2) & (radius > 1e-6), radius, 1.0)


class PoseAligner(nn.Module):
  """`(reference (B, K, 2), reference_scores (B, K), driving (B, K, 2), driving_scores (B, K)) ->
  {'svd': Similarity, 'final': Similarity}`, one transform per row taking driving onto reference."""
  config: PoseAlignerConfig
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, reference, reference_scores, driving, driving_scores):
    c = self.config
    if reference.shape[-2:] != (c.num_keypoints, 2) or driving.shape != reference.shape:
      raise ValueError(f"PoseAligner: reference {reference.shape} and driving {driving.shape}; "
                       f"expected both (B, {c.num_keypoints}, 2)")
    ref_p = (reference_scores > 0).astype(jnp.float32)
    drv_p = (driving_scores > 0).astype(jnp.float32)
    svd = similarity.procrustes(driving, reference, ref_p * drv_p)
    inter = similarity.apply(svd, driving)
    center, radius = jax.lax.stop_gradient(reference_frame(reference, reference_scores))
    local = lambda p, present: ((p - center[:, None]) / radius[:, None, None]) * present[..., None]  # noqa: E731
    main_in = jnp.concatenate([local(reference, ref_p), ref_p[..., None],
                               local(driving, drv_p), drv_p[..., None]], -1)
    guide_in = jnp.concatenate([local(inter, drv_p), drv_p[..., None]], -1)
    either = (ref_p + drv_p) > 0
    main = _Encoder(c, self.dtype, self.param_dtype, name="encoder_main")(main_in, either)
    guide = _Encoder(c, self.dtype, self.param_dtype, name="encoder_guide")(guide_in, drv_p > 0)
    for i in range(c.fusion_layers):
      main = _Block(c, True, self.dtype, self.param_dtype, name=f"fusion_{i}")(main, drv_p > 0,
                                                                                guide)
    main = LayerNorm(1e-5, True, "embed", self.dtype, self.param_dtype, name="norm_out")(main)
    w = either.astype(jnp.float32)[..., None]
    pooled = (main * w).sum(1) / jnp.maximum(w.sum(1), 1.0)
    h = nn.gelu(dense(c.width, ("embed", "mlp"), "head_1", self.dtype, self.param_dtype)(pooled))
    out = Projection((4,), ("mlp", None), bias_axes=(None,), kernel_init=nn.initializers.zeros,
                     dtype=jnp.float32, param_dtype=self.param_dtype, name="head_2")(h)
    correction = similarity.about(jnp.exp(out[:, 0]), out[:, 1], out[:, 2:] * radius[:, None],
                                  center)
    return {"svd": svd, "final": similarity.compose(correction, svd)}


def build(config: dict, dtype="float32", param_dtype="float32") -> PoseAligner:
  """Factory of kind 'pose-aligner' (load_pretrained): JSON kwargs."""
  if not isinstance(config, PoseAlignerConfig):
    config = from_fields(PoseAlignerConfig, config, "PoseAligner")
  return PoseAligner(config, dtype=as_dtype(dtype), param_dtype=as_dtype(param_dtype))
