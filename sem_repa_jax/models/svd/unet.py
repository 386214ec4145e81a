"""Stable Video Diffusion U-Net (diffusers `UNetSpatioTemporalConditionModel`), channels-last.

    temb = MLP(sinusoid(c_noise)) + MLP(sinusoids of added_time_ids: fps - 1, motion, noise aug)
    x = conv_in(sample) (+ pose_features)  -> down blocks -> mid block -> up blocks (with skips)
      -> GroupNorm, SiLU, conv_out

Every frame of a video shares temb and the context (B, T, D); the temporal layers inside the blocks
mix frames. One module covers SVD (14 frames) and SVD-XT (25 frames), which have the same shapes,
through `UNetSpatioTemporalConfig` (field names are diffusers' config.json keys).

Two hooks for StableAnimator, both absent by default, where the module is exactly diffusers':
`pose_features` (B, F, h, w, block_out_channels[0]) is added to the output of conv_in (its PoseNet),
and `extra_context_tokens` N > 0 makes the last N context tokens the 'id' group of every spatial
cross-attention, projected by its own to_k_id / to_v_id (transformer_temporal.py); `id_alignment`
'distribution' aligns that group's output per frame to the main one's mean and std first
(StableAnimator's distribution-aware ID adapter).

VividPose's hooks, absent by default too: `reference_features` (one token set per spatial
transformer block, in `spatial_block_paths(config)` order: a ReferenceNet's features, (B, L, C)
for every frame alike or (B, F, L, C) per frame) join the keys/values of each spatial
self-attention; `id_in_temporal` adds the 'id' group to the temporal cross-attentions too and
`id_zero_init` starts every to_v_id at zero (the ID branch adds exactly 0 until trained).
"""
import re
import dataclasses
from dataclasses import dataclass
from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from sem_repa_jax.models.config_fields import (check_attention_and_remat, from_fields,
                                              unet_block_problems)
from sem_repa_jax.models.svd.unet_blocks import (DownBlock, MidBlock, UpBlock, through_levels,
                                                 transformer_block_paths)
from sem_repa_jax.nn.attention_layers import EXTRA_ALIGNMENTS
from sem_repa_jax.nn.convs import VIDEO_AXES, Conv2D
from sem_repa_jax.nn.embeddings import TimestepEmbedding, get_timestep_embedding
from sem_repa_jax.nn.norms import GroupNorm

DOWN_BLOCKS = ("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal")
UP_BLOCKS = ("CrossAttnUpBlockSpatioTemporal", "UpBlockSpatioTemporal")
_PER_BLOCK = ("layers_per_block", "cross_attention_dim", "transformer_layers_per_block",
              "num_attention_heads")
NORM_GROUPS = 32   # every GroupNorm of the model (fixed in diffusers)
OWN_FIELDS = ("extra_context_tokens", "id_alignment", "id_in_temporal", "id_zero_init")


@dataclass(frozen=True)
class UNetSpatioTemporalConfig:
  """Integers given per block may be one int (every block); they are stored per block."""
  sample_size: Optional[int] = None
  in_channels: int = 8
  out_channels: int = 4
  down_block_types: tuple = ("CrossAttnDownBlockSpatioTemporal",) * 3 + ("DownBlockSpatioTemporal",)
  up_block_types: tuple = ("UpBlockSpatioTemporal",) + ("CrossAttnUpBlockSpatioTemporal",) * 3
  block_out_channels: tuple = (320, 640, 1280, 1280)
  addition_time_embed_dim: int = 256
  projection_class_embeddings_input_dim: int = 768
  layers_per_block: Any = 2
  cross_attention_dim: Any = 1024
  transformer_layers_per_block: Any = 1
  num_attention_heads: Any = (5, 10, 20, 20)
  num_frames: int = 25        # recorded by diffusers; the forward takes any frame count
  extra_context_tokens: int = 0   # not diffusers': StableAnimator's face tokens
  id_alignment: str = "none"      # not diffusers': 'distribution' is StableAnimator's ID adapter
  id_in_temporal: bool = False    # not diffusers': VividPose's ID group in temporal attn2 too
  id_zero_init: bool = False      # not diffusers': to_v_id starts at zero (VividPose)

  def __post_init__(self):
    problems = unet_block_problems(self, _PER_BLOCK, {"down_block_types": DOWN_BLOCKS,
                                                      "up_block_types": UP_BLOCKS}, NORM_GROUPS)
    if not problems:
      heads = [(c, h) for c, h in zip(self.block_out_channels, self.num_attention_heads) if c % h]
      if heads:
        problems.append(f"(channels, num_attention_heads) {heads}: heads must divide the width")
      if len(set(self.cross_attention_dim)) > 1:
        problems.append(f"cross_attention_dim {list(self.cross_attention_dim)}: every block reads "
                        "the same encoder_hidden_states, so one width only")
    if self.projection_class_embeddings_input_dim % self.addition_time_embed_dim:
      problems.append(f"projection_class_embeddings_input_dim "
                      f"{self.projection_class_embeddings_input_dim} is not a multiple of "
                      f"addition_time_embed_dim {self.addition_time_embed_dim}")
    if self.extra_context_tokens < 0:
      problems.append(f"extra_context_tokens {self.extra_context_tokens} < 0")
    if self.id_alignment not in EXTRA_ALIGNMENTS:
      problems.append(f"id_alignment {self.id_alignment!r}: expected one of {EXTRA_ALIGNMENTS}")
    elif self.id_alignment != "none" and self.extra_context_tokens == 0:
      problems.append(f"id_alignment {self.id_alignment!r} aligns the extra context tokens' "
                      "branch: it needs extra_context_tokens > 0")
    if self.id_in_temporal and self.extra_context_tokens == 0:
      problems.append("id_in_temporal needs extra_context_tokens > 0 (the 'id' group)")
    if problems:
      raise ValueError("SVD U-Net config not supported: " + "; ".join(problems))

  @property
  def num_added_time_ids(self) -> int:
    return self.projection_class_embeddings_input_dim // self.addition_time_embed_dim


_SVD_XT = UNetSpatioTemporalConfig(sample_size=96)
PRESETS = {
    "svd": dataclasses.replace(_SVD_XT, num_frames=14),
    "svd-xt": _SVD_XT,
}


def config_from_diffusers(cfg: dict, **overrides) -> UNetSpatioTemporalConfig:
  """A diffusers unet config.json dict (keys starting with '_' are metadata) -> the config;
  unknown keys are an error. overrides: this port's own fields (extra_context_tokens,
  id_alignment, id_in_temporal, id_zero_init)."""
  name = cfg.get("_class_name", "UNetSpatioTemporalConditionModel")
  if name != "UNetSpatioTemporalConditionModel":
    raise ValueError(f"_class_name {name!r}, expected 'UNetSpatioTemporalConditionModel' (the "
                     "unet/ folder of a Stable Video Diffusion repository)")
  values = {k: v for k, v in cfg.items() if not k.startswith("_")}
  for own in OWN_FIELDS:
    if own in values:
      raise ValueError(f"{own} is not a diffusers key; pass it as an override")
  return from_fields(UNetSpatioTemporalConfig, {**values, **overrides}, "diffusers SVD U-Net")


class UNetSpatioTemporal(nn.Module):
  """apply(v, sample (B,F,h,w,in), timestep (B,) EDM c_noise, encoder_hidden_states (B,T,D),
  added_time_ids (B,3), pose_features=None (B,F,h,w,C0), image_only_indicator=None (B,F),
  reference_features=None (per spatial block (B,L,C) or (B,F,L,C))) -> (B,F,h,w,out)."""
  config: UNetSpatioTemporalConfig
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  attention: str = "xla"
  remat_policy: str = "none"

  def _check(self, sample, encoder_hidden_states, added_time_ids, pose_features):
    c = self.config
    check_attention_and_remat(self.attention, self.remat_policy)
    if sample.ndim != 5 or sample.shape[-1] != c.in_channels:
      raise ValueError(f"sample must be (B, F, h, w, {c.in_channels}), got {sample.shape}")
    b = sample.shape[0]
    d = c.cross_attention_dim[0]
    if encoder_hidden_states.ndim != 3 or encoder_hidden_states.shape[::2] != (b, d):
      raise ValueError(f"encoder_hidden_states must be ({b}, T, {d}), got "
                       f"{encoder_hidden_states.shape}")
    if encoder_hidden_states.shape[1] <= c.extra_context_tokens:
      raise ValueError(f"encoder_hidden_states has {encoder_hidden_states.shape[1]} tokens; this "
                       f"model takes 1 or more, then {c.extra_context_tokens} extra ones")
    if added_time_ids.shape != (b, c.num_added_time_ids):
      raise ValueError(f"added_time_ids must be ({b}, {c.num_added_time_ids}), got "
                       f"{added_time_ids.shape}")
    want = sample.shape[:4] + (c.block_out_channels[0],)
    if pose_features is not None and pose_features.shape != want:
      raise ValueError(f"pose_features must be {want} (conv_in's output), got "
                       f"{pose_features.shape}")

  @nn.compact
  def __call__(self, sample, timestep, encoder_hidden_states, added_time_ids, pose_features=None,
               image_only_indicator=None, reference_features=None):
    c = self.config
    self._check(sample, encoder_hidden_states, added_time_ids, pose_features)
    reference = (None if reference_features is None else
                 reference_by_block(c, reference_features, sample.shape[:2]))
    b, f = sample.shape[:2]
    c0 = c.block_out_channels[0]
    mlp = lambda name: TimestepEmbedding(4 * c0, dtype=self.dtype, param_dtype=self.param_dtype,
                                         name=name)
    t = jnp.broadcast_to(jnp.reshape(jnp.asarray(timestep, jnp.float32), (-1,)), (b,))
    temb = mlp("time_embedding")(get_timestep_embedding(t, c0, True, 0).astype(self.dtype))
    ids = get_timestep_embedding(jnp.reshape(added_time_ids, (-1,)), c.addition_time_embed_dim,
                                 True, 0)
    temb = temb + mlp("add_embedding")(ids.reshape(b, -1).astype(self.dtype))

    context = encoder_hidden_states.astype(self.dtype)
    indicator = (jnp.zeros((b, f), self.dtype) if image_only_indicator is None
                 else jnp.asarray(image_only_indicator))
    common = dict(extra_context_tokens=c.extra_context_tokens, id_alignment=c.id_alignment,
                  id_in_temporal=c.id_in_temporal, id_zero_init=c.id_zero_init,
                  attention=self.attention,
                  remat_policy=self.remat_policy, dtype=self.dtype, param_dtype=self.param_dtype)

    x = Conv2D(c0, (3, 3), dtype=self.dtype, param_dtype=self.param_dtype, name="conv_in")(sample)
    if pose_features is not None:
      x = x + pose_features.astype(self.dtype)
    x = nn.with_logical_constraint(x, VIDEO_AXES)
    n = len(c.block_out_channels)
    down = []
    for i, kind in enumerate(c.down_block_types):
      cross = kind == DOWN_BLOCKS[0]
      down.append(DownBlock(c.block_out_channels[i], c.layers_per_block[i], cross,
                            c.num_attention_heads[i], c.transformer_layers_per_block[i],
                            1e-6 if cross else 1e-5, i < n - 1, **common, name=f"down_blocks_{i}"))
    mid = MidBlock(c.block_out_channels[-1], 1, True, c.num_attention_heads[-1],
                   c.transformer_layers_per_block[-1], 1e-5, False, **common, name="mid_block")
    up = []
    for i, kind in enumerate(c.up_block_types):
      j = n - 1 - i   # the down level this up block mirrors
      up.append(UpBlock(c.block_out_channels[j], c.layers_per_block[j] + 1, kind == UP_BLOCKS[0],
                        c.num_attention_heads[j], c.transformer_layers_per_block[j], 1e-6,
                        i < n - 1, **common, name=f"up_blocks_{i}"))
    x = through_levels(x, down, mid, up, c.layers_per_block, temb, context, indicator, reference)

    x = GroupNorm(NORM_GROUPS, 1e-5, per_frame=True, dtype=jnp.float32,
                  param_dtype=self.param_dtype, name="conv_norm_out")(x)
    x = nn.silu(x).astype(self.dtype)
    x = Conv2D(c.out_channels, (3, 3), dtype=self.dtype, param_dtype=self.param_dtype,
               name="conv_out")(x)
    return nn.with_logical_constraint(x, VIDEO_AXES)


def spatial_block_paths(config: UNetSpatioTemporalConfig) -> tuple:
  """(diffusers path, width) of every spatial transformer block in forward order: where
  reference_features[i] goes (the names models/sd's reference_feature_names gives an SD U-Net)."""
  return transformer_block_paths([k == DOWN_BLOCKS[0] for k in config.down_block_types],
                                 [k == UP_BLOCKS[0] for k in config.up_block_types],
                                 config.layers_per_block, config.transformer_layers_per_block,
                                 config.block_out_channels)


_PATH = re.compile(r"(.+)\.attentions\.(\d+)\.transformer_blocks\.(\d+)$")


def reference_by_block(config: UNetSpatioTemporalConfig, features, batch_frames) -> dict:
  """A flat sequence of reference tokens (spatial_block_paths order) -> {block: per attention,
  per layer, tokens} (unet_blocks.through_levels), every shape checked against its block."""
  paths = spatial_block_paths(config)
  features = tuple(features)
  if len(features) != len(paths):
    raise ValueError(f"reference_features: {len(features)} token sets for the {len(paths)} "
                     f"spatial transformer blocks of this U-Net ({paths[0][0]}, ...)")
  b, f = batch_frames
  nested = {}
  for (path, width), r in zip(paths, features):
    ok = (r.ndim == 3 and r.shape[0] == b) or (r.ndim == 4 and r.shape[:2] == (b, f))
    if not ok or r.shape[-1] != width:
      raise ValueError(f"reference_features for {path}: expected ({b}, L, {width}) or ({b}, {f}, "
                       f"L, {width}), got {tuple(r.shape)}")
    block, a, t = _PATH.match(path).groups()
    nested.setdefault(block, {}).setdefault(int(a), {})[int(t)] = r
  return {block: tuple(tuple(layers[t] for t in sorted(layers))
                       for _, layers in sorted(attentions.items()))
          for block, attentions in nested.items()}


def example_inputs(config: UNetSpatioTemporalConfig, batch: int = 1, frames: int = 1):
  """Zero inputs of the smallest latent the model takes (one pixel at the deepest level)."""
  side = 2 ** (len(config.block_out_channels) - 1)
  return dict(sample=jnp.zeros((batch, frames, side, side, config.in_channels)),
              timestep=jnp.zeros((batch,)),
              encoder_hidden_states=jnp.zeros((batch, 1 + config.extra_context_tokens,
                                               config.cross_attention_dim[0])),
              added_time_ids=jnp.zeros((batch, config.num_added_time_ids)))


def build(config: dict, dtype="float32", param_dtype="float32", attention: str = "xla",
          remat_policy: str = "none") -> UNetSpatioTemporal:
  """Factory of kind 'svd-unet' (load_pretrained): JSON kwargs (a config dict, dtype names)."""
  if not isinstance(config, UNetSpatioTemporalConfig):
    config = from_fields(UNetSpatioTemporalConfig, config, "SVD U-Net")
  return UNetSpatioTemporal(config, dtype=jnp.dtype(dtype), param_dtype=jnp.dtype(param_dtype),
                            attention=attention, remat_policy=remat_policy)
