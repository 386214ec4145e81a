"""RAFT (Teed & Deng 2020, Recurrent All-Pairs Field Transforms) as torchvision builds it, in Flax.

The optical flow of the motion score (eval/motion.py): torchvision.models.optical_flow.raft_large
(config LARGE, weights raft_large_C_T_SKHT_V2-ff5fadd5.pth) or raft_small (SMALL), the same graph:

  feature encoder  a 7x7/2 conv, three stages of two residual (large) or bottleneck (small)
                   blocks (strides 1, 2, 2), a 1x1 conv; instance norm without affine
                   parameters, on both frames: features at 1/8 resolution
  context encoder  the same on the first frame, with BatchNorm (large: running statistics) or no
                   norm (small); its output splits into the GRU's initial hidden state (tanh) and
                   the context (ReLU)
  correlation      all pairs of 1/8 features, dot products / sqrt(C), average-pooled 2x2 three
                   times (num_levels 4); each iteration looks up a (2r+1)^2 window (radius 4;
                   small: 3) around the current match at every level by bilinear sampling with
                   zero padding outside, as torchvision's grid_sample(align_corners=True) on
                   absolute pixel coordinates does; the window's x offset is the major axis of the
                   (2r+1)^2 channels, as torchvision's meshgrid(indexing='ij') orders them
  update block     motion encoder (correlation and flow convs), a ConvGRU (large: a 1x5 then a
                   5x1 GRU; small: one 3x3 GRU), the flow head's delta added to the match
  upsampling       large: the convex combination of each 1/8 pixel's 3x3 neighbours with the
                   mask predictor's softmax weights (0.25 * logits, 8x8x9 channels); small: 8x
                   the flow resized by bilinear interpolation with align_corners=True

`num_flow_updates` iterations (torchvision's default 12) run in one nn.scan. `apply(v, image1,
image2)`: two frames (B, H, W, 3) RGB in [-1, 1], what Raft_Large_Weights.DEFAULT.transforms()
makes of uint8 frames (x / 255 * 2 - 1) -> the final flow (B, H, W, 2) from image1 to image2 in
pixels, (dx, dy). H and W are multiples of 8 and at least 128 (the coarsest correlation level is
then 2x2), as torchvision requires. Channels-last throughout; parameter names are torchvision's
module names, nested modules of one idea joined by '_' (feature_encoder/layer2_0/convnormrelu1/conv,
update_block/recurrent_block_convgru1/convz, update_block/flow_head_conv2, mask_predictor_conv).
"""
import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from sem_repa_jax.models.metrics.inception import resize_matrix

STRIDES = (2, 1, 2, 2)   # of the encoders' first conv and their three stages: 1/8 resolution
DOWNSAMPLE = 8
INSTANCE_NORM_EPS = 1e-5
BATCH_NORM_EPS = 1e-5
MASK_SCALE = 0.25   # torchvision's MaskPredictor multiplier


@dataclasses.dataclass(frozen=True)
class RAFTConfig:
  feature_layers: tuple = (64, 64, 96, 128, 256)   # first conv, three stages, output
  context_layers: tuple = (64, 64, 96, 128, 256)   # the output: hidden_size + context channels
  block: str = "residual"          # 'residual' (large) or 'bottleneck' (small)
  context_norm: str = "batch"      # 'batch' (large) or 'none' (small)
  corr_levels: int = 4
  corr_radius: int = 4
  motion_corr_layers: tuple = (256, 192)
  motion_flow_layers: tuple = (128, 64)
  motion_out_channels: int = 128
  hidden_size: int = 128
  gru_kernels: tuple = ((1, 5), (5, 1))
  flow_head_hidden: int = 256
  convex_upsampling: bool = True   # the mask predictor (large); else bilinear (small)

  @classmethod
  def from_dict(cls, d: dict) -> "RAFTConfig":
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
      raise ValueError(f"RAFTConfig: unknown fields {unknown}; expected some of {sorted(known)}")
    tupled = lambda v: tuple(tupled(x) for x in v) if isinstance(v, (list, tuple)) else v
    return cls(**{k: tupled(v) for k, v in d.items()})


LARGE = RAFTConfig()
SMALL = RAFTConfig(feature_layers=(32, 32, 64, 96, 128), context_layers=(32, 32, 64, 96, 160),
                   block="bottleneck", context_norm="none", corr_radius=3,
                   motion_corr_layers=(96,), motion_flow_layers=(64, 32), motion_out_channels=82,
                   hidden_size=96, gru_kernels=((3, 3),), flow_head_hidden=128,
                   convex_upsampling=False)
VARIANTS = {"large": LARGE, "small": SMALL}


def instance_norm(x):
  """torch's InstanceNorm2d without affine parameters: per sample and channel over H, W."""
  x = x.astype(jnp.float32)
  mean = x.mean((1, 2), keepdims=True)
  var = jnp.square(x - mean).mean((1, 2), keepdims=True)
  return (x - mean) * jax.lax.rsqrt(var + INSTANCE_NORM_EPS)


def _pair(k):
  return (k, k) if isinstance(k, int) else tuple(k)


def _conv(features, kernel, stride, name, dtype, param_dtype):
  # torch's symmetric (k - 1) // 2 padding; 'SAME' would pad stride-2 convs on one side only.
  kernel = _pair(kernel)
  return nn.Conv(features, kernel, strides=stride, padding=[((k - 1) // 2,) * 2 for k in kernel],
                 dtype=dtype, param_dtype=param_dtype, name=name)


class ConvNormActivation(nn.Module):
  """torchvision's Conv2dNormActivation: conv with bias, norm ('instance', 'batch', 'none'), ReLU."""
  features: int
  kernel: Any = 3
  stride: int = 1
  norm: str = "none"
  activation: bool = True
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = _conv(self.features, self.kernel, self.stride, "conv", self.dtype, self.param_dtype)(x)
    if self.norm == "batch":
      x = nn.BatchNorm(use_running_average=True, epsilon=BATCH_NORM_EPS, dtype=jnp.float32,
                       param_dtype=self.param_dtype, name="norm")(x)
    elif self.norm == "instance":
      x = instance_norm(x)
    x = x.astype(self.dtype)
    return nn.relu(x) if self.activation else x


class EncoderBlock(nn.Module):
  """A residual block (two 3x3 convs) or a bottleneck (1x1, 3x3, 1x1 at a quarter of the width);
  both end in a ReLU of the sum, the shortcut a 1x1 conv + norm where the block strides."""
  features: int
  block: str
  norm: str
  stride: int = 1
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    unit = lambda f, k, s, name, act=True: ConvNormActivation(
        f, k, s, self.norm, act, self.dtype, self.param_dtype, name=name)
    if self.block == "residual":
      y = unit(self.features, 3, self.stride, "convnormrelu1")(x)
      y = unit(self.features, 3, 1, "convnormrelu2")(y)
    else:
      y = unit(self.features // 4, 1, 1, "convnormrelu1")(x)
      y = unit(self.features // 4, 3, self.stride, "convnormrelu2")(y)
      y = unit(self.features, 1, 1, "convnormrelu3")(y)
    if self.stride != 1:
      x = unit(self.features, 1, self.stride, "downsample", act=False)(x)
    return nn.relu(x + y)


class FeatureEncoder(nn.Module):
  """The feature and the context encoder: (B, H, W, 3) -> (B, H/8, W/8, layers[4])."""
  layers: tuple
  block: str
  norm: str
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = ConvNormActivation(self.layers[0], 7, STRIDES[0], self.norm, name="convnormrelu", **kw)(x)
    for stage in range(1, 4):
      for i in range(2):
        x = EncoderBlock(self.layers[stage], self.block, self.norm,
                         STRIDES[stage] if i == 0 else 1, name=f"layer{stage}_{i}", **kw)(x)
    return _conv(self.layers[4], 1, 1, "conv", self.dtype, self.param_dtype)(x)


def correlation_pyramid(fmap1, fmap2, levels: int) -> tuple:
  """All-pairs correlation <f1(i, j), f2(k, l)> / sqrt(C), as (B*h*w, h, w) maps over (k, l), then
  2x2 average pooled levels - 1 times (floor, as F.avg_pool2d)."""
  b, h, w, c = fmap1.shape
  corr = jnp.einsum("bijc,bklc->bijkl", fmap1.astype(jnp.float32), fmap2.astype(jnp.float32))
  corr = (corr / jnp.sqrt(jnp.float32(c))).reshape(b * h * w, h, w)
  pyramid = [corr]
  for _ in range(levels - 1):
    n, hh, ww = corr.shape
    corr = corr[:, :hh // 2 * 2, :ww // 2 * 2].reshape(n, hh // 2, 2, ww // 2, 2).mean((2, 4))
    pyramid.append(corr)
  return tuple(pyramid)


def bilinear_sample(maps, x, y):
  """maps (N, H, W) at pixel coordinates x, y (N, ...): bilinear, corners outside count as 0
  (grid_sample with align_corners=True and zero padding)."""
  n, h, w = maps.shape
  flat = maps.reshape(n, h * w)
  x0, y0 = jnp.floor(x), jnp.floor(y)
  fx, fy = x - x0, y - y0
  out = jnp.zeros(x.shape, jnp.float32)
  for dx, dy, weight in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)),
                         (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
    xi, yi = x0 + dx, y0 + dy
    inside = (xi >= 0) & (xi <= w - 1) & (yi >= 0) & (yi <= h - 1)
    index = (jnp.clip(yi, 0, h - 1) * w + jnp.clip(xi, 0, w - 1)).astype(jnp.int32)
    value = jnp.take_along_axis(flat, index.reshape(n, -1), axis=1).reshape(x.shape)
    out = out + jnp.where(inside, value, 0.0) * weight
  return out


def lookup(pyramid, coords, radius: int):
  """Correlation features (B, h, w, levels * (2r+1)^2) around coords (B, h, w, 2) = (x, y) in
  1/8-resolution pixels; level l reads coords / 2^l with unscaled offsets -r..r."""
  b, h, w, _ = coords.shape
  d = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
  dx, dy = jnp.meshgrid(d, d, indexing="ij")   # x offset on the major axis (torchvision's order)
  centre = coords.reshape(b * h * w, 1, 1, 2).astype(jnp.float32)
  out = []
  for level, corr in enumerate(pyramid):
    c = centre / (2.0 ** level)
    x, y = c[..., 0] + dx, c[..., 1] + dy
    out.append(bilinear_sample(corr, x, y).reshape(b, h, w, -1))
  return jnp.concatenate(out, -1)


class ConvGRU(nn.Module):
  hidden_size: int
  kernel: tuple
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, h, x):
    conv = lambda name: _conv(self.hidden_size, self.kernel, 1, name, self.dtype, self.param_dtype)
    hx = jnp.concatenate([h, x], -1)
    z = nn.sigmoid(conv("convz")(hx))
    r = nn.sigmoid(conv("convr")(hx))
    q = jnp.tanh(conv("convq")(jnp.concatenate([r * h, x], -1)))
    return (1 - z) * h + z * q


class MotionEncoder(nn.Module):
  """Correlation and flow features: (flow (B, h, w, 2), corr) -> (B, h, w, motion_out_channels),
  the flow itself its last two channels."""
  config: RAFTConfig
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, flow, corr):
    cfg = self.config
    unit = lambda f, k, name: ConvNormActivation(f, k, dtype=self.dtype,
                                                 param_dtype=self.param_dtype, name=name)
    c = unit(cfg.motion_corr_layers[0], 1, "convcorr1")(corr)
    if len(cfg.motion_corr_layers) == 2:
      c = unit(cfg.motion_corr_layers[1], 3, "convcorr2")(c)
    f = unit(cfg.motion_flow_layers[1], 3, "convflow2")(unit(cfg.motion_flow_layers[0], 7,
                                                             "convflow1")(flow))
    out = unit(cfg.motion_out_channels - 2, 3, "conv")(jnp.concatenate([c, f], -1))
    return jnp.concatenate([out, flow], -1)


class FlowUpdate(nn.Module):
  """One iteration: look up the correlation at the current match coords1, run the update block
  (motion encoder, ConvGRU, flow head) and move coords1 by the predicted delta."""
  config: RAFTConfig
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, carry, context, pyramid, coords0):
    cfg, kw = self.config, dict(dtype=self.dtype, param_dtype=self.param_dtype)
    hidden, coords1 = carry
    corr = lookup(pyramid, coords1, cfg.corr_radius).astype(self.dtype)
    motion = MotionEncoder(cfg, name="motion_encoder", **kw)(
        (coords1 - coords0).astype(self.dtype), corr)
    x = jnp.concatenate([context, motion], -1)
    for i, kernel in enumerate(cfg.gru_kernels):
      hidden = ConvGRU(cfg.hidden_size, kernel, name=f"recurrent_block_convgru{i + 1}", **kw)(
          hidden, x)
    head = nn.relu(_conv(cfg.flow_head_hidden, 3, 1, "flow_head_conv1", **kw)(hidden))
    delta = _conv(2, 3, 1, "flow_head_conv2", **kw)(head)
    return (hidden, coords1 + delta.astype(jnp.float32)), None


def convex_upsample(flow, mask):
  """(B, h, w, 2) flow, (B, h, w, 9*8*8) mask logits -> (B, 8h, 8w, 2): each fine pixel a softmax-
  weighted mean of 8x the flow at its coarse pixel's 3x3 neighbours (zero padded), torchvision's
  upsample_flow with the mask's channels ordered (neighbour, row, column)."""
  b, h, w, _ = flow.shape
  f = DOWNSAMPLE
  weights = jax.nn.softmax(mask.astype(jnp.float32).reshape(b, h, w, 9, f, f), axis=3)
  padded = jnp.pad(f * flow.astype(jnp.float32), ((0, 0), (1, 1), (1, 1), (0, 0)))
  neighbours = jnp.stack([padded[:, ky:ky + h, kx:kx + w] for ky in range(3) for kx in range(3)],
                         axis=3)
  up = jnp.einsum("bhwkpq,bhwkc->bhpwqc", weights, neighbours)
  return up.reshape(b, h * f, w * f, 2)


def bilinear_upsample(flow):
  """8x the flow resized 8x by bilinear interpolation with align_corners=True (raft_small)."""
  _, h, w, _ = flow.shape
  mh = jnp.asarray(resize_matrix(h, h * DOWNSAMPLE, align_corners=True))
  mw = jnp.asarray(resize_matrix(w, w * DOWNSAMPLE, align_corners=True))
  return DOWNSAMPLE * jnp.einsum("ph,qw,bhwc->bpqc", mh, mw, flow.astype(jnp.float32))


def check_frames(shape, config: RAFTConfig, where: str = "RAFT") -> None:
  """Frames (B, H, W, 3) RAFT takes: H, W multiples of 8 whose 1/8 maps survive the pyramid."""
  smallest = DOWNSAMPLE * 2 ** config.corr_levels
  if len(shape) != 4 or shape[-1] != 3 or shape[1] % DOWNSAMPLE or shape[2] % DOWNSAMPLE or \
      min(shape[1], shape[2]) < smallest:
    raise ValueError(f"{where}: frames of shape {tuple(shape)}; expected (B, H, W, 3) with H and W "
                     f"multiples of {DOWNSAMPLE} and at least {smallest}")


class RAFT(nn.Module):
  """See the module docstring."""
  config: RAFTConfig = LARGE
  num_flow_updates: int = 12
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, image1, image2):
    cfg, kw = self.config, dict(dtype=self.dtype, param_dtype=self.param_dtype)
    if image1.shape != image2.shape:
      raise ValueError(f"RAFT: frames {image1.shape} and {image2.shape} differ")
    check_frames(image1.shape, cfg)
    b, hh, ww, _ = image1.shape
    x1, x2 = image1.astype(self.dtype), image2.astype(self.dtype)
    fmaps = FeatureEncoder(cfg.feature_layers, cfg.block, "instance", name="feature_encoder",
                           **kw)(jnp.concatenate([x1, x2]))
    pyramid = correlation_pyramid(*jnp.split(fmaps, 2), cfg.corr_levels)
    ctx = FeatureEncoder(cfg.context_layers, cfg.block, cfg.context_norm,
                         name="context_encoder", **kw)(x1)
    hidden, context = jnp.tanh(ctx[..., :cfg.hidden_size]), nn.relu(ctx[..., cfg.hidden_size:])
    h, w = hh // DOWNSAMPLE, ww // DOWNSAMPLE
    ys, xs = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32),
                          indexing="ij")
    coords0 = jnp.broadcast_to(jnp.stack([xs, ys], -1), (b, h, w, 2))
    iterations = nn.scan(FlowUpdate, variable_broadcast="params", split_rngs={"params": False},
                         in_axes=(nn.broadcast, nn.broadcast, nn.broadcast),
                         length=self.num_flow_updates)
    (hidden, coords1), _ = iterations(cfg, name="update_block", **kw)(
        (hidden, coords0), context, pyramid, coords0)
    flow = coords1 - coords0
    if not cfg.convex_upsampling:
      return bilinear_upsample(flow)
    m = ConvNormActivation(256, 3, name="mask_predictor_convrelu", **kw)(hidden)
    mask = MASK_SCALE * _conv(DOWNSAMPLE * DOWNSAMPLE * 9, 1, 1, "mask_predictor_conv", **kw)(m)
    return convex_upsample(flow, mask)


def build(config=None, num_flow_updates: int = 12, dtype: str = "float32",
          param_dtype: str = "float32") -> RAFT:
  """JSON-friendly factory (the registry's entry for kind 'raft'): config a RAFTConfig dict or a
  variant name ('large', 'small'); None is LARGE."""
  if config is None or isinstance(config, str):
    if config is not None and config not in VARIANTS:
      raise ValueError(f"RAFT config {config!r}: expected one of {sorted(VARIANTS)} or a dict")
    cfg = VARIANTS[config or "large"]
  else:
    cfg = RAFTConfig.from_dict(dict(config))
  return RAFT(config=cfg, num_flow_updates=int(num_flow_updates), dtype=jnp.dtype(dtype),
              param_dtype=jnp.dtype(param_dtype))
