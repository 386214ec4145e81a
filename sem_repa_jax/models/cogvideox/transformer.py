"""CogVideoX 3D diffusion transformer (diffusers `CogVideoXTransformer3DModel`), channels-last.

One module covers CogVideoX 2b, 5b, 5b-I2V, 1.5-5B and 1.5-5B-I2V through `CogVideoXTransformerConfig`
(field names are diffusers' config.json keys). The Structure Alignment Module of SemanticREPA is the
same module with a smaller `num_layers` and its own in/out channels.

Layout differences from diffusers, absorbed by the converter: patch embedding and proj_out act on
channels-last patches (features ordered (pt, p, p, C) instead of (C, pt, p, p)); q/k/v kernels are
(D, heads, head_dim) and to_out (heads, head_dim, D). Positional information is computed here from
the input shape, as the diffusers pipeline does: 3D sincos (2b), 3D RoPE (5b and 1.5), or the
learned table of 5b-I2V, which lives in the 'buffers' collection because diffusers keeps it as a
buffer (not trained by its fine-tuning scripts).
"""
import dataclasses
from dataclasses import dataclass
from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from sem_repa_jax.models.cogvideox.transformer_block import CogVideoXBlock
from sem_repa_jax.nn.attention import IMPLEMENTATIONS
from sem_repa_jax.nn.dense import dense
from sem_repa_jax.nn.embeddings import (TimestepEmbedding, get_3d_rotary_pos_embed,
                                        get_3d_sincos_pos_embed, get_resize_crop_region_for_grid,
                                        get_timestep_embedding)
from sem_repa_jax.nn.norms import LayerNorm
from sem_repa_jax.nn.stacking import scanned


@dataclass(frozen=True)
class CogVideoXTransformerConfig:
  num_attention_heads: int = 30
  attention_head_dim: int = 64
  in_channels: int = 16
  out_channels: int = 16
  flip_sin_to_cos: bool = True
  freq_shift: float = 0
  time_embed_dim: int = 512
  ofs_embed_dim: Optional[int] = None
  text_embed_dim: int = 4096
  num_layers: int = 30
  dropout: float = 0.0
  attention_bias: bool = True
  sample_width: int = 90
  sample_height: int = 60
  sample_frames: int = 49
  patch_size: int = 2
  patch_size_t: Optional[int] = None
  temporal_compression_ratio: int = 4
  max_text_seq_length: int = 226
  activation_fn: str = "gelu-approximate"
  timestep_activation_fn: str = "silu"
  norm_elementwise_affine: bool = True
  norm_eps: float = 1e-5
  spatial_interpolation_scale: float = 1.875
  temporal_interpolation_scale: float = 1.0
  use_rotary_positional_embeddings: bool = False
  use_learned_positional_embeddings: bool = False
  patch_bias: bool = True

  def __post_init__(self):
    problems = []
    if self.activation_fn != "gelu-approximate":
      problems.append(f"activation_fn {self.activation_fn!r} (only 'gelu-approximate' is ported)")
    if self.timestep_activation_fn != "silu":
      problems.append(f"timestep_activation_fn {self.timestep_activation_fn!r} (only 'silu')")
    if self.dropout != 0.0:
      problems.append(f"dropout {self.dropout} (only 0.0, as in every released checkpoint)")
    if self.use_learned_positional_embeddings and not self.use_rotary_positional_embeddings:
      problems.append("learned positional embeddings without rotary ones (diffusers refuses this)")
    hd = self.attention_head_dim
    if self.use_rotary_positional_embeddings and (hd % 8 or (hd // 4) % 2 or (hd // 8 * 3) % 2):
      problems.append(f"attention_head_dim {hd}: 3D RoPE splits it t:hd/4, h,w:3hd/8, all even")
    if not self.use_rotary_positional_embeddings and self.inner_dim % 16:
      problems.append(f"inner dim {self.inner_dim}: 3D sincos needs a multiple of 16")
    if self.ofs_embed_dim and self.ofs_embed_dim != self.time_embed_dim:
      problems.append(f"ofs_embed_dim {self.ofs_embed_dim} != time_embed_dim "
                      f"{self.time_embed_dim} (the two embeddings are summed)")
    if self.out_channels is None:
      problems.append("out_channels is None")
    if problems:
      raise ValueError("CogVideoX transformer config not supported: " + "; ".join(problems))

  @property
  def inner_dim(self) -> int:
    return self.num_attention_heads * self.attention_head_dim

  @property
  def patch_t(self) -> int:
    return self.patch_size_t or 1


_BASE_2B = CogVideoXTransformerConfig()
_BASE_5B = dataclasses.replace(_BASE_2B, num_attention_heads=48, num_layers=42,
                               use_rotary_positional_embeddings=True)
_BASE_15 = dataclasses.replace(_BASE_5B, sample_height=300, sample_width=300, sample_frames=81,
                               patch_size_t=2, patch_bias=False)
PRESETS = {
    "cogvideox-2b": _BASE_2B,
    "cogvideox-5b": _BASE_5B,
    "cogvideox-5b-i2v": dataclasses.replace(_BASE_5B, in_channels=32,
                                            use_learned_positional_embeddings=True),
    "cogvideox1.5-5b": _BASE_15,
    "cogvideox1.5-5b-i2v": dataclasses.replace(_BASE_15, in_channels=32, ofs_embed_dim=512),
}


def config_from_diffusers(cfg: dict) -> CogVideoXTransformerConfig:
  """Reads a diffusers transformer config.json dict; unknown keys are an error, not ignored."""
  fields = {f.name for f in dataclasses.fields(CogVideoXTransformerConfig)}
  kwargs = {k: v for k, v in cfg.items() if not k.startswith("_")}
  unknown = sorted(set(kwargs) - fields)
  if unknown:
    raise ValueError(f"diffusers CogVideoX config has keys this port does not know: {unknown}")
  return CogVideoXTransformerConfig(**kwargs)


class PatchEmbed(nn.Module):
  """CogVideoXPatchEmbed: Dense over channels-last patches, text_proj, joint [text, video] sequence.
  Returns it with the learned table (5b-I2V, 'buffers' collection) or None."""
  features: int
  use_bias: bool
  learned_init: Any
  dtype: Any
  param_dtype: Any

  @nn.compact
  def __call__(self, patches, text_embeds):
    x = dense(self.features, ("conv_in", "embed"), "proj", self.dtype, self.param_dtype,
              use_bias=self.use_bias)(patches)
    text = dense(self.features, (None, "embed"), "text_proj", self.dtype,
                 self.param_dtype)(text_embeds)
    learned = None
    if self.learned_init is not None:
      learned = self.variable("buffers", "pos_embedding",
                              lambda: jnp.asarray(self.learned_init(), self.param_dtype)).value
    return jnp.concatenate([text, x], axis=1), learned


class AdaLayerNormOut(nn.Module):
  """diffusers AdaLayerNorm(chunk_dim=1): Linear(SiLU(temb)) -> (shift, scale), in that order."""
  eps: float
  affine: bool
  dtype: Any
  param_dtype: Any

  @nn.compact
  def __call__(self, x, temb):
    mod = dense(2 * x.shape[-1], (None, "embed"), "linear", self.dtype,
                self.param_dtype)(nn.silu(temb))
    shift, scale = jnp.split(mod, 2, axis=-1)
    y = LayerNorm(self.eps, self.affine, "embed", jnp.float32, self.param_dtype, name="norm")(x)
    return (y * (1 + scale[:, None]) + shift[:, None]).astype(self.dtype)


class CogVideoXTransformer3D(nn.Module):
  """apply(v, latents (B,F,h,w,C), text_embeds (B,L,D_text), timestep (B,), ofs=None)
  -> (B,F,h,w,C_out); with return_hidden_states=True also the video tokens after the blocks,
  (B, F/pt, h/p, w/p, D), before the output norm."""
  config: CogVideoXTransformerConfig
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  attention: str = "xla"
  remat_policy: str = "none"

  def _timestep_embedding(self, t, in_dim, out_dim, name):
    t = jnp.atleast_1d(jnp.asarray(t))
    e = get_timestep_embedding(t, in_dim, self.config.flip_sin_to_cos, self.config.freq_shift)
    return TimestepEmbedding(out_dim, dtype=self.dtype, param_dtype=self.param_dtype,
                             name=name)(e.astype(self.dtype))

  def _learned_table_init(self):
    c = self.config
    p = c.patch_size
    # diffusers' buffer before loading: sincos at the sample size, zero text rows.
    return lambda: self._sincos_table(c.sample_height // p, c.sample_width // p,
                                      self._sample_latent_frames(), c.max_text_seq_length)

  def _positional(self, frames, grid_h, grid_w, text_length, learned):
    """Additive table (1, L+N, D) or None, and RoPE (cos, sin) over L+N rows or None."""
    c = self.config
    p, pt = c.patch_size, c.patch_t
    add, rope = None, None
    if c.use_learned_positional_embeddings:
      if (grid_h * p, grid_w * p) != (c.sample_height, c.sample_width):
        raise ValueError(f"latents of {grid_h * p}x{grid_w * p}: this model's learned positional "
                         f"embedding only covers its sample size {c.sample_height}x{c.sample_width}")
      if text_length != c.max_text_seq_length:
        raise ValueError(f"text_embeds of length {text_length}: the learned positional embedding "
                         f"expects max_text_seq_length={c.max_text_seq_length}")
      if frames == self._sample_latent_frames():
        add = learned.astype(self.dtype)
      else:  # diffusers swaps in the sincos table when only the frame count differs
        add = jnp.asarray(self._sincos_table(grid_h, grid_w, frames, text_length), self.dtype)
    elif not c.use_rotary_positional_embeddings:
      add = jnp.asarray(self._sincos_table(grid_h, grid_w, frames, text_length), self.dtype)
    if c.use_rotary_positional_embeddings:
      base_h, base_w = c.sample_height // p, c.sample_width // p
      if c.patch_size_t is None:
        crops = get_resize_crop_region_for_grid((grid_h, grid_w), base_w, base_h)
        cos, sin = get_3d_rotary_pos_embed(c.attention_head_dim, crops, (grid_h, grid_w), frames)
      else:
        cos, sin = get_3d_rotary_pos_embed(c.attention_head_dim, None, (grid_h, grid_w),
                                           frames // pt, grid_type="slice",
                                           max_size=(base_h, base_w))
      pad = ((text_length, 0), (0, 0))
      rope = (jnp.asarray(np.pad(cos, pad, constant_values=1.0)),
              jnp.asarray(np.pad(sin, pad, constant_values=0.0)))
    return add, rope

  def _sample_latent_frames(self):
    c = self.config
    return (c.sample_frames - 1) // c.temporal_compression_ratio + 1

  def _sincos_table(self, grid_h, grid_w, frames, text_length):
    c = self.config
    table = get_3d_sincos_pos_embed(c.inner_dim, (grid_w, grid_h), frames,
                                    c.spatial_interpolation_scale, c.temporal_interpolation_scale)
    table = table.reshape(-1, c.inner_dim)
    return np.concatenate([np.zeros((text_length, c.inner_dim)), table])[None].astype(np.float32)

  @nn.compact
  def __call__(self, latents, text_embeds=None, timestep=None, ofs=None,
               return_hidden_states: bool = False):
    c = self.config
    p, pt, dim = c.patch_size, c.patch_t, c.inner_dim
    if self.attention not in IMPLEMENTATIONS:
      raise ValueError(f"attention {self.attention!r} is not one of {IMPLEMENTATIONS}")
    if latents.ndim != 5 or latents.shape[-1] != c.in_channels:
      raise ValueError(f"latents must be (B, F, h, w, {c.in_channels}), got {latents.shape}")
    b, f, h, w, _ = latents.shape
    if h % p or w % p or f % pt:
      raise ValueError(f"latents {latents.shape}: h and w must be multiples of patch_size={p} "
                       f"and F a multiple of patch_size_t={pt}")
    if text_embeds is None:
      text_embeds = jnp.zeros((b, 0, c.text_embed_dim), self.dtype)
    if text_embeds.ndim != 3 or text_embeds.shape[-1] != c.text_embed_dim:
      raise ValueError(f"text_embeds must be (B, L, {c.text_embed_dim}), got {text_embeds.shape}")
    if timestep is None:
      raise ValueError("timestep is required: (B,) diffusion timesteps")
    text_length = text_embeds.shape[1]

    temb = self._timestep_embedding(timestep, dim, c.time_embed_dim, "time_embedding")
    if c.ofs_embed_dim:
      if ofs is None:
        raise ValueError("this model has an ofs embedding (CogVideoX 1.5 I2V): pass ofs "
                         "(the diffusers pipeline uses 2.0)")
      temb = temb + self._timestep_embedding(ofs, c.ofs_embed_dim, c.ofs_embed_dim, "ofs_embedding")
    temb = jnp.broadcast_to(temb, (b, temb.shape[-1]))

    # Patch embedding: channels-last patches (pt, p, p, C) -> one Dense (= the stride-p conv).
    gf, gh, gw = f // pt, h // p, w // p
    x = latents.astype(self.dtype).reshape(b, gf, pt, gh, p, gw, p, c.in_channels)
    x = x.transpose(0, 1, 3, 5, 2, 4, 6, 7).reshape(b, gf * gh * gw, pt * p * p * c.in_channels)
    x, learned = PatchEmbed(dim, c.patch_bias or c.patch_size_t is not None,
                            self._learned_table_init() if c.use_learned_positional_embeddings
                            else None, self.dtype, self.param_dtype, name="patch_embed")(
        x, text_embeds.astype(self.dtype))
    add, rope = self._positional(f, gh, gw, text_length, learned)
    if add is not None:
      x = x + add

    blocks = scanned(CogVideoXBlock, c.num_layers, self.remat_policy, broadcast_args=1)(
        c.num_attention_heads, c.attention_head_dim, text_length, c.norm_eps,
        c.norm_elementwise_affine, c.attention_bias, self.attention, self.dtype, self.param_dtype,
        name="transformer_blocks")
    x, _ = blocks(x, (temb, rope))

    hidden = x[:, text_length:]
    y = LayerNorm(c.norm_eps, c.norm_elementwise_affine, "embed", jnp.float32, self.param_dtype,
                  name="norm_final")(hidden)
    y = AdaLayerNormOut(c.norm_eps, c.norm_elementwise_affine, self.dtype, self.param_dtype,
                        name="norm_out")(y, temb)
    y = dense(pt * p * p * c.out_channels, ("embed", "conv_out"), "proj_out", self.dtype,
              self.param_dtype)(y)
    y = y.reshape(b, gf, gh, gw, pt, p, p, c.out_channels).transpose(0, 1, 4, 2, 5, 3, 6, 7)
    out = y.reshape(b, f, h, w, c.out_channels)
    if return_hidden_states:
      return out, hidden.reshape(b, gf, gh, gw, dim)
    return out


def example_inputs(config: CogVideoXTransformerConfig, batch: int = 1, tiny: bool = True):
  """Zero inputs the module accepts (sample size when a learned table pins it); for init."""
  c = config
  if tiny and not c.use_learned_positional_embeddings:
    f, h, w, length = c.patch_t, c.patch_size, c.patch_size, 1
  else:
    f = (c.sample_frames - 1) // c.temporal_compression_ratio + 1
    f = -(-f // c.patch_t) * c.patch_t
    h, w, length = c.sample_height, c.sample_width, c.max_text_seq_length
  return dict(latents=jnp.zeros((batch, f, h, w, c.in_channels)),
              text_embeds=jnp.zeros((batch, length, c.text_embed_dim)),
              timestep=jnp.zeros((batch,)),
              ofs=jnp.zeros((1,)) if c.ofs_embed_dim else None)


def build(config: dict, dtype="float32", param_dtype="float32", attention: str = "xla",
          remat_policy: str = "none") -> CogVideoXTransformer3D:
  """Factory for load_pretrained: JSON kwargs (a config dict, dtype names) -> the module."""
  if not isinstance(config, CogVideoXTransformerConfig):
    config = CogVideoXTransformerConfig(**config)
  return CogVideoXTransformer3D(config, dtype=jnp.dtype(dtype), param_dtype=jnp.dtype(param_dtype),
                                attention=attention, remat_policy=remat_policy)
