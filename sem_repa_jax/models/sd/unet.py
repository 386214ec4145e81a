"""Stable Diffusion U-Net (diffusers `UNet2DConditionModel`, SD 1.x / 2.x), channels-last.

    temb = MLP(sinusoid(timestep))
    x = conv_in(sample) -> down blocks -> mid block -> up blocks (with skips)
      -> GroupNorm, SiLU, conv_out

One module for every released SD 1.x / 2.x U-Net through `UNet2DConditionConfig` (unet_config.py:
diffusers' config.json keys, presets 'sd21', 'sd21-base', 'sd15'). Every ResNet's GroupNorm and
the output GroupNorm use the config's norm_eps (1e-5), the transformers' GroupNorm 1e-6,
LayerNorms 1e-5. upcast_attention is accepted and changes nothing: the attention dispatch always
takes its scores and softmax in float32 (diffusers' upcast, which matters in half precision).

As VividPose's ReferenceNet (an SD 2.1 U-Net run once on the reference latent) it hands over the
input of every spatial self-attention: `reference_features` returns norm1(hidden states) of each
BasicTransformerBlock, (B, h*w, C) tokens, in forward order, named as diffusers names the block
('down_blocks.0.attentions.0.transformer_blocks.0', ...; `reference_feature_names`). These are the
tokens reference attention concatenates to the denoiser's own before to_k / to_v (the reference-
only / ReferenceNet "bank" of AnimateAnyone-style methods keeps norm1's output, not the residual
stream: the denoiser's attn1 sees its own normalized tokens, so the two are on one scale).
"""
import re
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from flax import traverse_util

from sem_repa_jax.models.config_fields import check_attention_and_remat, from_fields
from sem_repa_jax.models.sd.transformer_2d import NORM_GROUPS
from sem_repa_jax.models.sd.unet_blocks import DownBlock2D, MidBlock2D, UpBlock2D
from sem_repa_jax.models.sd.unet_config import (DOWN_BLOCKS, PRESETS, UP_BLOCKS,  # noqa: F401
                                                UNet2DConditionConfig, config_from_diffusers)
from sem_repa_jax.models.svd.transformer_temporal import ATTN1_INPUT, INTERMEDIATES
from sem_repa_jax.models.svd.unet_blocks import through_levels, transformer_block_paths
from sem_repa_jax.nn.convs import IMAGE_AXES, Conv2D
from sem_repa_jax.nn.embeddings import TimestepEmbedding, get_timestep_embedding
from sem_repa_jax.nn.norms import GroupNorm


class UNet2DConditionModel(nn.Module):
  """apply(v, sample (B,h,w,in), timestep (B,) or one value, encoder_hidden_states (B,T,D))
  -> (B,h,w,out)."""
  config: UNet2DConditionConfig
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  attention: str = "xla"
  remat_policy: str = "none"

  def _check(self, sample, encoder_hidden_states):
    c = self.config
    check_attention_and_remat(self.attention, self.remat_policy)
    if sample.ndim != 4 or sample.shape[-1] != c.in_channels:
      raise ValueError(f"sample must be (B, h, w, {c.in_channels}), got {sample.shape}")
    b, d = sample.shape[0], c.cross_attention_dim[0]
    if encoder_hidden_states.ndim != 3 or encoder_hidden_states.shape[::2] != (b, d):
      raise ValueError(f"encoder_hidden_states must be ({b}, T, {d}), got "
                       f"{encoder_hidden_states.shape}")

  @nn.compact
  def __call__(self, sample, timestep, encoder_hidden_states):
    c = self.config
    self._check(sample, encoder_hidden_states)
    b, c0, n = sample.shape[0], c.block_out_channels[0], len(c.block_out_channels)
    t = jnp.broadcast_to(jnp.reshape(jnp.asarray(timestep, jnp.float32), (-1,)), (b,))
    t = get_timestep_embedding(t, c0, c.flip_sin_to_cos, c.freq_shift).astype(self.dtype)
    temb = TimestepEmbedding(4 * c0, dtype=self.dtype, param_dtype=self.param_dtype,
                             name="time_embedding")(t)
    context = encoder_hidden_states.astype(self.dtype)
    common = dict(attention=self.attention, remat_policy=self.remat_policy, dtype=self.dtype,
                  param_dtype=self.param_dtype)

    x = Conv2D(c0, (3, 3), dtype=self.dtype, param_dtype=self.param_dtype, name="conv_in")(sample)
    x = nn.with_logical_constraint(x, IMAGE_AXES)
    down = [DownBlock2D(c.block_out_channels[i], c.layers_per_block[i], kind == DOWN_BLOCKS[0],
                        c.num_heads[i], c.transformer_layers_per_block[i], c.norm_eps, i < n - 1,
                        **common, name=f"down_blocks_{i}")
            for i, kind in enumerate(c.down_block_types)]
    mid = MidBlock2D(c.block_out_channels[-1], 1, True, c.num_heads[-1],
                     c.transformer_layers_per_block[-1], c.norm_eps, False, **common,
                     name="mid_block")
    up = [UpBlock2D(c.block_out_channels[n - 1 - i], c.layers_per_block[n - 1 - i] + 1,
                    kind == UP_BLOCKS[0], c.num_heads[n - 1 - i],
                    c.transformer_layers_per_block[n - 1 - i], c.norm_eps, i < n - 1, **common,
                    name=f"up_blocks_{i}")
          for i, kind in enumerate(c.up_block_types)]
    x = through_levels(x, down, mid, up, c.layers_per_block, temb, context, None)

    x = GroupNorm(NORM_GROUPS, c.norm_eps, dtype=jnp.float32, param_dtype=self.param_dtype,
                  name="conv_norm_out")(x)
    x = nn.silu(x).astype(self.dtype)
    x = Conv2D(c.out_channels, (3, 3), dtype=self.dtype, param_dtype=self.param_dtype,
               name="conv_out")(x)
    return nn.with_logical_constraint(x, IMAGE_AXES)


def reference_feature_names(config: UNet2DConditionConfig) -> tuple:
  """diffusers' module path of every BasicTransformerBlock, in the order the forward runs them."""
  return tuple(path for path, _ in reference_feature_paths(config))


def reference_feature_paths(config: UNet2DConditionConfig) -> tuple:
  """(path, width) of every BasicTransformerBlock in forward order (the features' channels)."""
  return transformer_block_paths([k == DOWN_BLOCKS[0] for k in config.down_block_types],
                                 [k == UP_BLOCKS[0] for k in config.up_block_types],
                                 config.layers_per_block, config.transformer_layers_per_block,
                                 config.block_out_channels)


def _diffusers_name(flax_path: str) -> str:
  """Flax path -> diffusers' ('down_blocks_0/attentions_1' -> 'down_blocks.0.attentions.1')."""
  return re.sub(r"_(\d+)(?=/|$)", r".\1", flax_path).replace("/", ".")


def reference_features(module: UNet2DConditionModel, variables, sample, timestep,
                       encoder_hidden_states):
  """-> (output, features): the U-Net's output and the input of each spatial self-attention
  (norm1's output, (B, h_l * w_l, C_l)), a tuple in `reference_feature_names(module.config)`
  order. Pure and jittable (module static); the output equals a plain apply's."""
  out, state = module.apply(variables, sample, timestep, encoder_hidden_states,
                            mutable=[INTERMEDIATES])
  flat = traverse_util.flatten_dict(state[INTERMEDIATES], sep="/")
  sown = {_diffusers_name(k[:-len(ATTN1_INPUT) - 1]): v[0] for k, v in flat.items()
          if k.endswith("/" + ATTN1_INPUT)}
  names = reference_feature_names(module.config)
  if set(sown) != set(names):   # a change of the block structure that the names did not follow
    raise RuntimeError(f"sown attn1 inputs {sorted(sown)} differ from the expected {names}")
  return out, tuple(sown[k] for k in names)


def example_inputs(config: UNet2DConditionConfig, batch: int = 1, tokens: int = 1):
  """Zero inputs of the smallest latent the model takes (one pixel at the deepest level)."""
  side = 2 ** (len(config.block_out_channels) - 1)
  return dict(sample=jnp.zeros((batch, side, side, config.in_channels)),
              timestep=jnp.zeros((batch,)),
              encoder_hidden_states=jnp.zeros((batch, tokens, config.cross_attention_dim[0])))


def build(config: dict, dtype="float32", param_dtype="float32", attention: str = "xla",
          remat_policy: str = "none") -> UNet2DConditionModel:
  """Factory of kind 'sd-unet' (load_pretrained): JSON kwargs (a config dict, dtype names)."""
  if not isinstance(config, UNet2DConditionConfig):
    config = from_fields(UNet2DConditionConfig, config, "SD U-Net")
  return UNet2DConditionModel(config, dtype=jnp.dtype(dtype), param_dtype=jnp.dtype(param_dtype),
                              attention=attention, remat_policy=remat_policy)
