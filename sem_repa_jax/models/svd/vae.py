"""SVD's temporal VAE (diffusers `AutoencoderKLTemporalDecoder`), channels-last.

`apply(v, video (B,F,H,W,3) in [-1,1], method='encode') -> (mean, logvar)` of the posterior, each
frame encoded on its own as the image it is to Stable Diffusion's encoder (+ quant_conv); and
`apply(v, latents (B,F,h,w,4), decode_chunk_size=K, method='decode') -> video (B,F,H,W,3)`.
Latents are unscaled: the diffusion model sees them times `config.scaling_factor` (the SVD
pipeline's conditioning image latent is the posterior mode, unscaled).

Decoding follows the diffusers pipeline's `decode_latents`: the (B, F) latents are flattened to
B*F frames and cut into chunks [i, i + K), each decoded as one video of that chunk's length. The
decoder's temporal layers (GroupNorm across frames, Conv3d over frames, zero padded) see only their
chunk's frames, so K changes the output, and with B > 1 and K not dividing F a chunk spans two
videos, as it does in diffusers. The full chunks run in a `scan`, the remainder in one more call:
memory is bounded by one chunk, not by the frame count.
"""
import dataclasses
from typing import Any, Optional, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

from sem_repa_jax.models.config_fields import from_fields
from sem_repa_jax.models.svd.spatio_temporal_resnet import TemporalConv
from sem_repa_jax.models.svd.vae_blocks import (NORM_GROUPS, DownEncoderBlock, MidBlock,
                                                UpBlockTemporalDecoder)
from sem_repa_jax.nn.attention import IMPLEMENTATIONS
from sem_repa_jax.nn.convs import Conv2D
from sem_repa_jax.nn.norms import GroupNorm
from sem_repa_jax.nn.stacking import remat

Dtype = Any
LOGVAR_RANGE = (-30.0, 20.0)


@dataclasses.dataclass(frozen=True)
class VAEConfig:
  """Hyper-parameters of AutoencoderKLTemporalDecoder (diffusers config names)."""
  in_channels: int = 3
  out_channels: int = 3
  block_out_channels: tuple = (128, 256, 512, 512)
  layers_per_block: int = 2
  latent_channels: int = 4
  sample_size: int = 768
  scaling_factor: float = 0.18215

  def __post_init__(self):
    object.__setattr__(self, "block_out_channels", tuple(int(c) for c in self.block_out_channels))
    problems = []
    if not self.block_out_channels:
      problems.append("block_out_channels is empty")
    bad = [c for c in self.block_out_channels if c % NORM_GROUPS]
    if bad:
      problems.append(f"block_out_channels {self.block_out_channels} must be multiples of "
                      f"{NORM_GROUPS} (every GroupNorm has {NORM_GROUPS} groups); {bad} are not")
    if self.layers_per_block < 1:
      problems.append(f"layers_per_block={self.layers_per_block} must be at least 1")
    if problems:
      raise ValueError("VAEConfig: " + "; ".join(problems))

  @property
  def spatial_compression(self) -> int:
    return 2 ** (len(self.block_out_channels) - 1)


# stable-video-diffusion-img2vid and -img2vid-xt ship the same VAE.
PRESETS = {"svd": VAEConfig(), "svd-xt": VAEConfig()}

_CLASS = "AutoencoderKLTemporalDecoder"
_DIFFUSERS_KEYS = tuple(f.name for f in dataclasses.fields(VAEConfig))
# force_upcast tells diffusers pipelines to run the VAE in float32; here the caller picks dtype.
_IGNORED = ("force_upcast",)


def config_from_diffusers(d: dict, name: str = "config.json") -> VAEConfig:
  """VAEConfig from a diffusers AutoencoderKLTemporalDecoder config dict; a key or value the
  architecture does not implement is an error naming it."""
  problems = []
  if d.get("_class_name", _CLASS) != _CLASS:
    problems.append(f"_class_name {d['_class_name']!r}, expected {_CLASS!r}")
  n = len(d.get("block_out_channels", VAEConfig.block_out_channels))
  if "down_block_types" in d and list(d["down_block_types"]) != ["DownEncoderBlock2D"] * n:
    problems.append(f"down_block_types={d['down_block_types']!r}: expected {n} x "
                    "'DownEncoderBlock2D'")
  unknown = sorted(k for k in d if not k.startswith("_") and k not in _DIFFUSERS_KEYS
                   and k not in _IGNORED and k != "down_block_types")
  if unknown:
    problems.append(f"unknown keys {unknown}")
  if problems:
    raise ValueError(f"{name}: not a supported {_CLASS} config: " + "; ".join(problems))
  return VAEConfig(**{k: d[k] for k in _DIFFUSERS_KEYS if k in d})


class Encoder(nn.Module):
  """Stable Diffusion's VAE encoder on images (N, H, W, C) -> (N, h, w, 2 * latent_channels)."""
  config: VAEConfig
  attention: str = "xla"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    cfg = self.config
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    chans = cfg.block_out_channels
    h = Conv2D(chans[0], name="conv_in", **kw)(x)
    for i, c in enumerate(chans):
      h = DownEncoderBlock(c, cfg.layers_per_block, i < len(chans) - 1, name=f"down_blocks_{i}",
                           **kw)(h)
    h = MidBlock(chans[-1], 2, False, self.attention, name="mid_block", **kw)(h)
    h = nn.silu(GroupNorm(NORM_GROUPS, 1e-6, name="conv_norm_out", **kw)(h))
    return Conv2D(2 * cfg.latent_channels, name="conv_out", **kw)(h)


class TemporalDecoder(nn.Module):
  """diffusers TemporalDecoder on one chunk, latents (1, K, h, w, C) -> video (1, K, H, W, 3)."""
  config: VAEConfig
  attention: str = "xla"
  remat_policy: str = "none"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, z):
    cfg = self.config
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    chans = tuple(reversed(cfg.block_out_channels))
    mid_cls = remat(MidBlock, self.remat_policy)
    up_cls = remat(UpBlockTemporalDecoder, self.remat_policy)
    h = Conv2D(chans[0], name="conv_in", **kw)(z.astype(self.dtype))
    h = mid_cls(chans[0], cfg.layers_per_block, True, self.attention, name="mid_block", **kw)(h)
    for i, c in enumerate(chans):
      h = up_cls(c, cfg.layers_per_block + 1, i < len(chans) - 1, name=f"up_blocks_{i}", **kw)(h)
    h = nn.silu(GroupNorm(NORM_GROUPS, 1e-6, per_frame=True, name="conv_norm_out", **kw)(h))
    h = Conv2D(cfg.out_channels, name="conv_out", **kw)(h)
    return TemporalConv(cfg.out_channels, 3, name="time_conv_out", **kw)(h)


class TemporalVAE(nn.Module):
  """AutoencoderKLTemporalDecoder: `encode` -> (mean, logvar) in float32, `decode` -> video.

  attention: the kernel of the mid blocks' single-head attention (nn.attention); remat_policy:
  rematerialization of the decoder's mid and up blocks (nn.stacking.REMAT_POLICIES or 'none').
  """
  config: VAEConfig
  attention: str = "xla"
  remat_policy: str = "none"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def setup(self):
    if self.attention not in IMPLEMENTATIONS:
      raise ValueError(f"attention {self.attention!r} is not one of {IMPLEMENTATIONS}")
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    self.encoder = Encoder(self.config, self.attention, name="encoder", **kw)
    self.quant_conv = Conv2D(2 * self.config.latent_channels, (1, 1), name="quant_conv", **kw)
    self.decoder = TemporalDecoder(self.config, self.attention, self.remat_policy, name="decoder",
                                   **kw)

  def encode(self, video):
    """video (B, F, H, W, in_channels) -> (mean, logvar), each (B, F, h, w, latent_channels)."""
    if video.ndim != 5 or video.shape[-1] != self.config.in_channels:
      raise ValueError(f"encode: video must be (B, F, H, W, {self.config.in_channels}), "
                       f"got {video.shape}")
    b, f = video.shape[:2]
    images = video.reshape(b * f, *video.shape[2:]).astype(self.dtype)
    moments = self.quant_conv(self.encoder(images)).astype(jnp.float32)
    mean, logvar = jnp.split(moments.reshape(b, f, *moments.shape[1:]), 2, axis=-1)
    return mean, jnp.clip(logvar, *LOGVAR_RANGE)

  def decode(self, latents, decode_chunk_size: Optional[int] = None):
    """latents (B, F, h, w, latent_channels) -> video (B, F, H, W, out_channels), decoded in
    chunks of decode_chunk_size frames of the flattened B*F (None: F, one video a chunk)."""
    cfg = self.config
    if latents.ndim != 5 or latents.shape[-1] != cfg.latent_channels:
      raise ValueError(f"decode: latents must be (B, F, h, w, {cfg.latent_channels}), "
                       f"got {latents.shape}")
    b, f = latents.shape[:2]
    k = f if decode_chunk_size is None else int(decode_chunk_size)
    if k < 1:
      raise ValueError(f"decode_chunk_size={decode_chunk_size} must be at least 1")
    frames = latents.reshape(b * f, *latents.shape[2:]).astype(self.dtype)
    full, rest = divmod(b * f, k)
    parts = []
    if full:
      def body(decoder, carry, chunk):
        return carry, decoder(chunk)

      scan = nn.scan(body, variable_broadcast="params", split_rngs={"params": False}, length=full)
      chunks = frames[:full * k].reshape(full, 1, k, *frames.shape[1:])
      _, ys = scan(self.decoder, (), chunks)
      parts.append(ys.reshape(full * k, *ys.shape[3:]))
    if rest:
      start = full * k
      if parts:
        start = start + _after(parts[0])
      remainder = jax.lax.dynamic_slice_in_dim(frames, start, rest, axis=0)
      parts.append(self.decoder(remainder[None])[0])
    video = jnp.concatenate(parts, axis=0) if len(parts) > 1 else parts[0]
    return video.reshape(b, f, *video.shape[1:])

  def __call__(self, video, decode_chunk_size: Optional[int] = None):
    """Reconstruction from the posterior mode (used to initialize every parameter)."""
    mean, _ = self.encode(video)
    return self.decode(mean, decode_chunk_size)


def _after(x):
  """An int32 0 or 1 computed from x: a start index of `start + _after(x)` slices the same frames
  (dynamic_slice clamps it to the last valid start) but only once x exists.

  XLA inlines a one-step scan, and its scheduler then interleaves the remainder's decode with the
  chunk's (they are independent), holding both at once; XLA:CPU drops lax.optimization_barrier.
  This data dependency keeps one chunk's activations live at a time (F=14 at chunk 8: 1.6x less).
  """
  first = jax.lax.stop_gradient(x.reshape(-1)[0].astype(jnp.float32))
  return jax.lax.bitcast_convert_type(first, jnp.int32) & 1


def build(config: Union[dict, VAEConfig, str] = "svd", dtype="float32", param_dtype="float32",
          attention: str = "xla", remat_policy: str = "none") -> TemporalVAE:
  """Factory for load_pretrained: config is a preset name, a VAEConfig or its dict (JSON)."""
  if isinstance(config, str):
    if config not in PRESETS:
      raise ValueError(f"unknown SVD VAE preset {config!r}; expected one of {sorted(PRESETS)}")
    config = PRESETS[config]
  elif isinstance(config, dict):
    config = from_fields(VAEConfig, config, "SVD temporal VAE")
  return TemporalVAE(config, attention, remat_policy, dtype=jnp.dtype(dtype),
                     param_dtype=jnp.dtype(param_dtype))
