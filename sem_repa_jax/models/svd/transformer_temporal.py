"""SVD's spatio-temporal transformer (diffusers `TransformerSpatioTemporalModel`), its two blocks.

    y = proj_in(GroupNorm per frame (x))             tokens (B*F, H*W, C)
    per layer:  y = spatial block (y)                over the pixels of a frame: self, cross, FF
                m = temporal block (y + frame pos)   over the frames of a pixel: FF, self, cross, FF
                y = AlphaBlender(y, m)
    out = x + proj_out(y)

The frame position embedding (an MLP of the sinusoid of the frame index) enters the temporal branch
only. Context: the spatial cross-attention (attn2) of every frame sees the whole context; with
`extra_context_tokens` N > 0 its last N tokens form the extra group 'id' that attn2 projects with
its own to_k_id / to_v_id (StableAnimator's ID adapter: the output of that group is added to the
main one before to_out; with id_alignment 'distribution' it is first aligned per frame to the
main output's mean and std, nn.attention_layers.align_distribution). The temporal
cross-attention sees the main tokens only (all of them when N = 0, as diffusers).
The spatial BasicTransformerBlock (also the SD U-Net's, models/sd) sows its self-attention's input
norm1(x) into the 'intermediates' collection: what a ReferenceNet hands over (VividPose).

VividPose's hooks, all off by default: `reference` (one (B, L, C) or per-frame (B, F, L, C) token
set per layer) joins the keys/values of each spatial self-attention (attn1, through its own to_k /
to_v: reference attention, the same reference for every frame of a video when (B, L, C));
`id_in_temporal` gives the temporal cross-attentions the 'id' group too (the paper adds its ID
cross-attention "for each cross-attention layer"); `id_zero_init` starts every to_v_id at zero.
"""
from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from sem_repa_jax.models.svd.spatio_temporal_resnet import AlphaBlender
from sem_repa_jax.nn.attention_layers import Attention
from sem_repa_jax.nn.convs import VIDEO_AXES
from sem_repa_jax.nn.dense import dense
from sem_repa_jax.nn.embeddings import TimestepEmbedding, get_timestep_embedding
from sem_repa_jax.nn.norms import GroupNorm, LayerNorm

EXTRA_GROUP = "id"
INTERMEDIATES = "intermediates"   # the collection BasicTransformerBlock sows ATTN1_INPUT into
ATTN1_INPUT = "attn1_input"
TOKEN_AXES = ("batch", "length", "embed")


class GEGLUFeedForward(nn.Module):
  """diffusers FeedForward(activation_fn='geglu'): proj_in to (2, inner) = (value, gate), value *
  exact GELU(gate), proj_out. The (2, inner) kernel keeps both halves on one 'mlp' shard."""
  inner_dim: int
  out_features: Optional[int] = None
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    h = dense((2, self.inner_dim), ("embed", None, "mlp"), "proj_in", self.dtype,
              self.param_dtype)(x)
    h = h[..., 0, :] * nn.gelu(h[..., 1, :], approximate=False)
    h = nn.with_logical_constraint(h, ("batch", "length", "mlp"))
    return dense(self.out_features or x.shape[-1], ("mlp", "embed"), "proj_out", self.dtype,
                 self.param_dtype)(h)


def _layer_norm(block, name):
  return LayerNorm(1e-5, True, "embed", block.dtype, block.param_dtype, name=name)


class BasicTransformerBlock(nn.Module):
  """`(x (N, L, D), context (N, T, D_ctx), extra_context {group: (N, T_g, D_ctx)}) -> (N, L, D)`:
  pre-LayerNorm self-attention, cross-attention and GEGLU feed-forward, each residual."""
  heads: int
  head_dim: int
  extra_groups: tuple = ()
  attention: str = "xla"
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  extra_alignment: str = "none"
  extra_zero_init: bool = False

  def _attention(self, name, extra_groups=()):
    return Attention(self.heads, self.head_dim, extra_groups=extra_groups,
                     extra_alignment=self.extra_alignment if extra_groups else "none",
                     extra_zero_init=self.extra_zero_init, implementation=self.attention,
                     dtype=self.dtype, param_dtype=self.param_dtype, name=name)

  def _attend_and_feed(self, x, context, extra_context, reference=None):
    """-> (x, the self-attention's input norm1(x)); reference (N, L', D) joins attn1's keys."""
    h = _layer_norm(self, "norm1")(x)
    ref = None if reference is None else reference.astype(h.dtype)
    x = x + self._attention("attn1")(h, reference=ref)
    x = x + self._attention("attn2", self.extra_groups)(_layer_norm(self, "norm2")(x), context,
                                                        extra_context=extra_context)
    x = x + GEGLUFeedForward(4 * x.shape[-1], dtype=self.dtype, param_dtype=self.param_dtype,
                             name="ff")(_layer_norm(self, "norm3")(x))
    return nn.with_logical_constraint(x, TOKEN_AXES), h

  @nn.compact
  def __call__(self, x, context, extra_context=None, reference=None):
    x, h = self._attend_and_feed(x, context, extra_context, reference)
    # What a ReferenceNet hands to the denoiser's spatial self-attention (VividPose, models/sd):
    # kept only when the caller makes the collection mutable, a no-op otherwise.
    self.sow(INTERMEDIATES, ATTN1_INPUT, h)
    return x


class TemporalBasicTransformerBlock(BasicTransformerBlock):
  """`(x (N, F, D) the frames of each pixel, context (N, T, D_ctx)) -> (N, F, D)`: diffusers'
  block with a residual GEGLU feed-forward (norm_in, ff_in) before the attentions."""

  @nn.compact
  def __call__(self, x, context, extra_context=None):
    x = x + GEGLUFeedForward(4 * x.shape[-1], dtype=self.dtype, param_dtype=self.param_dtype,
                             name="ff_in")(_layer_norm(self, "norm_in")(x))
    return self._attend_and_feed(x, context, extra_context)[0]


class TransformerSpatioTemporalModel(nn.Module):
  """`(x (B, F, H, W, C), context (B, T, D_ctx), image_only_indicator (B, F), reference=None
  (per layer: (B, L, C) or (B, F, L, C))) -> (B, F, H, W, C)`."""
  heads: int
  num_layers: int = 1
  extra_context_tokens: int = 0
  attention: str = "xla"
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  id_alignment: str = "none"       # nn.attention_layers.EXTRA_ALIGNMENTS
  id_in_temporal: bool = False
  id_zero_init: bool = False

  def _frames_reference(self, reference, b, f):
    """Per layer (B, L, C) -> every frame's (B*F, L, C) (frames fold into the batch), or
    (B, F, L, C) -> (B*F, L, C)."""
    if reference is None:
      return (None,) * self.num_layers
    if len(reference) != self.num_layers:
      raise ValueError(f"{len(reference)} reference token sets for {self.num_layers} layers")
    return tuple(jnp.repeat(r, f, axis=0) if r.ndim == 3 else r.reshape(b * f, *r.shape[2:])
                 for r in reference)

  @nn.compact
  def __call__(self, x, context, image_only_indicator, reference=None):
    b, f, h, w, c = x.shape
    if c % self.heads:
      raise ValueError(f"{c} channels do not split into {self.heads} attention heads")
    reference = self._frames_reference(reference, b, f)
    n_extra = self.extra_context_tokens
    if context.shape[1] <= n_extra:
      raise ValueError(f"context of {context.shape[1]} tokens: this model takes its last "
                       f"{n_extra} as the '{EXTRA_GROUP}' group and needs at least one more")
    main = context[:, :context.shape[1] - n_extra].astype(self.dtype)
    # Every frame of a video attends to its video's context; every pixel's frames to the same.
    spatial_ctx = jnp.repeat(main, f, axis=0)
    extra = {EXTRA_GROUP: jnp.repeat(context[:, -n_extra:].astype(self.dtype), f, axis=0)} \
        if n_extra else None
    temporal_ctx = jnp.repeat(main, h * w, axis=0)
    groups = (EXTRA_GROUP,) if n_extra else ()
    temporal_groups = groups if self.id_in_temporal else ()
    temporal_extra = {EXTRA_GROUP: jnp.repeat(context[:, -n_extra:].astype(self.dtype), h * w,
                                              axis=0)} if temporal_groups else None

    y = GroupNorm(32, 1e-6, per_frame=True, dtype=self.dtype, param_dtype=self.param_dtype,
                  name="norm")(x)
    y = dense(c, (None, "embed"), "proj_in", self.dtype,
              self.param_dtype)(y.reshape(b * f, h * w, c))
    frame_pos = get_timestep_embedding(jnp.arange(f), c, flip_sin_to_cos=True,
                                       downscale_freq_shift=0).astype(self.dtype)
    frame_pos = TimestepEmbedding(4 * c, out_features=c, dtype=self.dtype,
                                  param_dtype=self.param_dtype, name="time_pos_embed")(frame_pos)
    mixer = AlphaBlender(0.5, "learned_with_images", param_dtype=self.param_dtype,
                         name="time_mixer")
    for i in range(self.num_layers):
      y = BasicTransformerBlock(self.heads, c // self.heads, groups, self.attention, self.dtype,
                                self.param_dtype, self.id_alignment, self.id_zero_init,
                                name=f"transformer_blocks_{i}")(
          y, spatial_ctx, extra, reference[i])
      m = y.reshape(b, f, h * w, c) + frame_pos[None, :, None, :]
      m = m.transpose(0, 2, 1, 3).reshape(b * h * w, f, c)
      m = TemporalBasicTransformerBlock(self.heads, c // self.heads, temporal_groups,
                                        self.attention, self.dtype, self.param_dtype,
                                        extra_zero_init=self.id_zero_init,
                                        name=f"temporal_transformer_blocks_{i}")(
          m, temporal_ctx, temporal_extra)
      m = m.reshape(b, h * w, f, c).transpose(0, 2, 1, 3)
      y = mixer(y.reshape(b, f, h * w, c), m, image_only_indicator).reshape(b * f, h * w, c)
    y = dense(c, ("embed", None), "proj_out", self.dtype, self.param_dtype)(y)
    return nn.with_logical_constraint(x + y.reshape(b, f, h, w, c), VIDEO_AXES)
