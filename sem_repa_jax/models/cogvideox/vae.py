"""The CogVideoX 3D causal VAE (diffusers `AutoencoderKLCogVideoX`), channels-last, chunk for chunk.

`apply(v, video (B,F,H,W,3) in [-1,1], method='encode') -> (mean, logvar)` of the posterior and
`apply(v, latents (B,f,h,w,C), method='decode') -> video`. Latents are unscaled: multiply by
`config.scaling_factor` for the diffusion model (the 1.5 I2V image latent divides instead, see
`invert_scale_latents`).

Frames are processed in chunks exactly as diffusers `_encode` / `_decode` do (GroupNorm statistics
are per chunk, so the chunking is part of the numbers): encode takes the first
`sample_frames_per_chunk + F % sample_frames_per_chunk` frames, then chunks of
`sample_frames_per_chunk`; decode the same with `latent_frames_per_chunk`. Causal-conv caches
carry from chunk to chunk. The equal-size chunks after the first run in a `scan` whose carry is the
cache, so memory is bounded by one chunk, not by the frame count.
"""
import dataclasses
from typing import Any, Optional, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

from sem_repa_jax.models.cogvideox import vae_tiling
from sem_repa_jax.models.cogvideox.vae_blocks import DownBlock3D, SpatialNorm3D, UpBlock3D
from sem_repa_jax.nn.convs import CausalConv3d
from sem_repa_jax.nn.norms import GroupNorm

Dtype = Any
LOGVAR_RANGE = (-30.0, 20.0)


@dataclasses.dataclass(frozen=True)
class VAEConfig:
  """Hyper-parameters of AutoencoderKLCogVideoX (diffusers config names where they exist)."""
  in_channels: int = 3
  out_channels: int = 3
  block_out_channels: tuple = (128, 256, 256, 512)
  latent_channels: int = 16
  layers_per_block: int = 3
  norm_eps: float = 1e-6
  norm_num_groups: int = 32
  temporal_compression_ratio: int = 4
  sample_height: int = 480        # default tiles are half of this (diffusers enable_tiling)
  sample_width: int = 720
  scaling_factor: float = 1.15258426
  invert_scale_latents: bool = False
  sample_frames_per_chunk: int = 8   # diffusers num_sample_frames_batch_size
  latent_frames_per_chunk: int = 2   # diffusers num_latent_frames_batch_size

  def __post_init__(self):
    object.__setattr__(self, "block_out_channels", tuple(int(c) for c in self.block_out_channels))
    bad = [c for c in self.block_out_channels if c % self.norm_num_groups]
    if bad:
      raise ValueError(f"VAEConfig: block_out_channels {self.block_out_channels} must be multiples "
                       f"of norm_num_groups={self.norm_num_groups} (GroupNorm); {bad} are not")
    levels = self.temporal_compress_level
    if 2 ** levels != self.temporal_compression_ratio or levels > len(self.block_out_channels) - 1:
      raise ValueError(f"VAEConfig: temporal_compression_ratio={self.temporal_compression_ratio} "
                       f"must be a power of 2 of at most 2**{len(self.block_out_channels) - 1}")

  @property
  def temporal_compress_level(self) -> int:
    return max(int(self.temporal_compression_ratio).bit_length() - 1, 0)

  @property
  def spatial_compression(self) -> int:
    return 2 ** (len(self.block_out_channels) - 1)

  def latent_frames(self, num_frames: int) -> int:
    """Latent frames for `num_frames` video frames (49 -> 13), following the chunking."""
    def compress(t):
      for _ in range(self.temporal_compress_level):
        t = 1 + (t - 1) // 2 if t % 2 else t // 2
      return t
    first, rest = chunk_plan(num_frames, self.sample_frames_per_chunk)
    return compress(first) + rest * compress(self.sample_frames_per_chunk)


PRESETS = {
    "cogvideox-2b": VAEConfig(scaling_factor=1.15258426),
    "cogvideox-5b": VAEConfig(scaling_factor=0.7),
    "cogvideox-5b-i2v": VAEConfig(scaling_factor=0.7),
    "cogvideox1.5-5b": VAEConfig(scaling_factor=0.7, invert_scale_latents=True),
    "cogvideox1.5-5b-i2v": VAEConfig(scaling_factor=0.7, invert_scale_latents=True),
}

_DIFFUSERS_KEYS = ("in_channels", "out_channels", "block_out_channels", "latent_channels",
                   "layers_per_block", "norm_eps", "norm_num_groups", "temporal_compression_ratio",
                   "sample_height", "sample_width", "scaling_factor", "invert_scale_latents")
# Accepted only with the value the architecture implements.
_FIXED = {"act_fn": "silu", "use_quant_conv": False, "use_post_quant_conv": False,
          "shift_factor": None, "latents_mean": None, "latents_std": None}
_IGNORED = ("force_upcast", "down_block_types", "up_block_types")


def config_from_diffusers(d: dict, name: str = "config.json") -> VAEConfig:
  """VAEConfig from a diffusers AutoencoderKLCogVideoX config dict; unknown keys are an error."""
  problems = []
  for key, want in _FIXED.items():
    if key in d and d[key] != want:
      problems.append(f"{key}={d[key]!r} is not supported (expected {want!r})")
  n = len(d.get("block_out_channels", VAEConfig.block_out_channels))
  for key, block in (("down_block_types", "CogVideoXDownBlock3D"),
                     ("up_block_types", "CogVideoXUpBlock3D")):
    if key in d and list(d[key]) != [block] * n:
      problems.append(f"{key}={d[key]!r}: expected {n} x {block!r}")
  unknown = sorted(k for k in d if not k.startswith("_") and k not in _DIFFUSERS_KEYS
                   and k not in _FIXED and k not in _IGNORED)
  if unknown:
    problems.append(f"unknown keys {unknown}")
  if problems:
    raise ValueError(f"{name}: not a supported AutoencoderKLCogVideoX config: " + "; ".join(problems))
  kwargs = {k: d[k] for k in _DIFFUSERS_KEYS if k in d}
  if "temporal_compression_ratio" in kwargs:
    kwargs["temporal_compression_ratio"] = int(kwargs["temporal_compression_ratio"])
  return VAEConfig(**kwargs)


def chunk_plan(num_frames: int, chunk: int) -> tuple:
  """(first chunk length, number of further chunks of `chunk` frames), as diffusers slices them."""
  if num_frames < 1:
    raise ValueError(f"a video needs at least one frame, got {num_frames}")
  batches = max(num_frames // chunk, 1)
  first = min(chunk + num_frames % chunk, num_frames)
  return first, batches - 1


def sample_posterior(mean, logvar, key):
  """z = mean + exp(logvar / 2) * eps, eps ~ N(0, 1)."""
  eps = jax.random.normal(key, mean.shape, jnp.float32)
  return (mean.astype(jnp.float32) + jnp.exp(0.5 * logvar.astype(jnp.float32)) * eps)


def run_chunks(net, x, chunk: int):
  """net(x_chunk, cache) -> (y_chunk, cache) over the frames of x (B, F, ...), diffusers' slicing."""
  b = x.shape[0]
  first, rest = chunk_plan(x.shape[1], chunk)
  y, cache = net(x[:, :first], None)
  if rest == 0:
    return y

  def body(mdl, carry, xc):
    yc, carry = mdl(xc, carry)
    return carry, yc

  xs = jnp.moveaxis(x[:, first:].reshape(b, rest, chunk, *x.shape[2:]), 1, 0)
  scan = nn.scan(body, variable_broadcast="params", split_rngs={"params": False}, length=rest)
  _, ys = scan(net, cache, xs)
  ys = jnp.moveaxis(ys, 0, 1).reshape(b, -1, *ys.shape[3:])
  return jnp.concatenate([y, ys.astype(y.dtype)], axis=1)


class Encoder3D(nn.Module):
  """CogVideoXEncoder3D on one chunk: (x, cache) -> (moments (B,f,h,w,2*latent), cache)."""
  config: VAEConfig
  conv_impl: str = "taps"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, cache=None):
    cfg = self.config
    cache = cache or {}
    new = {}
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    bkw = dict(kw, conv_impl=self.conv_impl)
    chans = cfg.block_out_channels
    h, new["conv_in"] = CausalConv3d(chans[0], impl=self.conv_impl, name="conv_in", **kw)(
        x, cache.get("conv_in"))
    for i, c in enumerate(chans):
      key = f"down_blocks_{i}"
      h, new[key] = DownBlock3D(c, cfg.layers_per_block, cfg.norm_num_groups, cfg.norm_eps,
                                add_downsample=i < len(chans) - 1,
                                compress_time=i < cfg.temporal_compress_level, name=key, **bkw)(
                                    h, cache.get(key))
    h, new["mid_block"] = DownBlock3D(chans[-1], 2, cfg.norm_num_groups, cfg.norm_eps, False, False,
                                      name="mid_block", **bkw)(h, cache.get("mid_block"))
    h = nn.silu(GroupNorm(cfg.norm_num_groups, 1e-6, name="norm_out", **kw)(h))
    h, new["conv_out"] = CausalConv3d(2 * cfg.latent_channels, impl=self.conv_impl,
                                      name="conv_out", **kw)(
        h, cache.get("conv_out"))
    return h, new


class Decoder3D(nn.Module):
  """CogVideoXDecoder3D on one chunk: (z, cache) -> (video chunk, cache); z is also the zq of
  every SpatialNorm3D."""
  config: VAEConfig
  conv_impl: str = "taps"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, z, cache=None):
    cfg = self.config
    cache = cache or {}
    new = {}
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    bkw = dict(kw, conv_impl=self.conv_impl)
    chans = tuple(reversed(cfg.block_out_channels))
    z = z.astype(self.dtype)
    h, new["conv_in"] = CausalConv3d(chans[0], impl=self.conv_impl, name="conv_in", **kw)(
        z, cache.get("conv_in"))
    h, new["mid_block"] = UpBlock3D(chans[0], 2, cfg.norm_num_groups, cfg.norm_eps, False, False,
                                    name="mid_block", **bkw)(h, z, cache.get("mid_block"))
    for i, c in enumerate(chans):
      key = f"up_blocks_{i}"
      h, new[key] = UpBlock3D(c, cfg.layers_per_block + 1, cfg.norm_num_groups, cfg.norm_eps,
                              add_upsample=i < len(chans) - 1,
                              compress_time=i < cfg.temporal_compress_level, name=key, **bkw)(
                                  h, z, cache.get(key))
    h = nn.silu(SpatialNorm3D(cfg.norm_num_groups, name="norm_out", **kw)(h, z))
    h, new["conv_out"] = CausalConv3d(cfg.out_channels, impl=self.conv_impl, name="conv_out",
                                      **kw)(
        h, cache.get("conv_out"))
    return h, new


Tiling = vae_tiling.Tiling


class CogVideoXVAE(nn.Module):
  """AutoencoderKLCogVideoX: `encode` -> (mean, logvar) in float32, `decode` -> video.

  tiling (encode/decode keyword): None (no tiling), True (diffusers' default tiles: half of
  sample_height x sample_width, overlaps 1/6 and 1/5) or a `Tiling`. As in diffusers, tiles are
  used only when the input is larger than one tile.
  conv_impl: 'taps' or 'conv3d' (see nn.convs.CausalConv3d); same numbers, different speed/memory.
  """
  config: VAEConfig
  conv_impl: str = "taps"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def setup(self):
    if self.conv_impl not in ("taps", "conv3d"):
      raise ValueError(f"conv_impl={self.conv_impl!r}: expected 'taps' or 'conv3d'")
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, conv_impl=self.conv_impl)
    self.encoder = Encoder3D(self.config, name="encoder", **kw)
    self.decoder = Decoder3D(self.config, name="decoder", **kw)

  def _tiling(self, tiling) -> Optional[vae_tiling.Tiling]:
    if tiling is None or tiling is False:
      return None
    if tiling is True:
      return vae_tiling.Tiling(self.config.sample_height // 2, self.config.sample_width // 2)
    return tiling

  def encode(self, video, tiling: Union[None, bool, vae_tiling.Tiling] = None):
    if video.ndim != 5 or video.shape[-1] != self.config.in_channels:
      raise ValueError(f"encode: video must be (B, F, H, W, {self.config.in_channels}), "
                       f"got {video.shape}")
    cfg = self.config
    tiles = self._tiling(tiling)
    video = video.astype(self.dtype)
    if tiles is not None and tiles.needed(video.shape[2:4], cfg.spatial_compression, False):
      moments = vae_tiling.tiled(run_chunks, self.encoder, video, cfg.sample_frames_per_chunk,
                                 tiles, cfg.spatial_compression, False)
    else:
      moments = run_chunks(self.encoder, video, cfg.sample_frames_per_chunk)
    moments = moments.astype(jnp.float32)
    mean, logvar = jnp.split(moments, 2, axis=-1)
    return mean, jnp.clip(logvar, *LOGVAR_RANGE)

  def decode(self, latents, tiling: Union[None, bool, vae_tiling.Tiling] = None):
    if latents.ndim != 5 or latents.shape[-1] != self.config.latent_channels:
      raise ValueError(f"decode: latents must be (B, F, h, w, {self.config.latent_channels}), "
                       f"got {latents.shape}")
    cfg = self.config
    tiles = self._tiling(tiling)
    latents = latents.astype(self.dtype)
    if tiles is not None and tiles.needed(latents.shape[2:4], cfg.spatial_compression, True):
      return vae_tiling.tiled(run_chunks, self.decoder, latents, cfg.latent_frames_per_chunk,
                              tiles, cfg.spatial_compression, True)
    return run_chunks(self.decoder, latents, cfg.latent_frames_per_chunk)

  def __call__(self, video):
    """Reconstruction from the posterior mode (used to initialize every parameter)."""
    mean, _ = self.encode(video)
    return self.decode(mean)


def cogvideox_vae(config: Union[dict, VAEConfig, str] = "cogvideox-2b", dtype="float32",
                  param_dtype="float32", conv_impl: str = "taps") -> CogVideoXVAE:
  """Factory for load_pretrained: config is a preset name, a VAEConfig or its dict (JSON)."""
  if isinstance(config, str):
    if config not in PRESETS:
      raise ValueError(f"unknown CogVideoX VAE preset {config!r}; expected one of {sorted(PRESETS)}")
    config = PRESETS[config]
  elif isinstance(config, dict):
    config = VAEConfig(**config)
  return CogVideoXVAE(config, conv_impl, dtype=jnp.dtype(dtype),
                      param_dtype=jnp.dtype(param_dtype))
