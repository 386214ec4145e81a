"""ArcFace recognition backbone: insightface's IResNet (iresnet.py of arcface_torch) in Flax.

Input: aligned face crops (B, 112, 112, 3), RGB, in [-1, 1]. This is what the public models see:
insightface feeds `cv2.dnn.blobFromImages(bgr, 1/127.5, (112, 112), 127.5, swapRB=True)`, i.e.
(x - 127.5) / 127.5 of the RGB image, to glintr100.onnx (antelopev2), w600k_r50.onnx (buffalo_l)
and the arcface_torch .pth files. Output: the (B, 512) embedding, NOT L2-normalized (compare
embeddings with cosine similarity).

Structure (insightface): conv3x3 -> BN -> PReLU stem; four stages of IBasicBlock
(BN -> conv3x3 -> BN -> PReLU -> conv3x3(stride) -> BN, plus conv1x1(stride)+BN on the shortcut of
each stage's first block); BN -> NCHW flatten -> FC -> BatchNorm1d ("features").
BatchNorm always uses its running statistics (inference mode): this encoder is frozen in every
use here (embedding targets, HJB face loss, ID metrics) but stays differentiable w.r.t. the input.

Two parameter layouts, chosen by `IResNetConfig.folded`:
  folded=False  exactly the PyTorch modules (conv without bias, then BatchNorm): the .pth layout.
  folded=True   every conv+BN pair merged into a conv with bias, as PyTorch's ONNX exporter and
                onnxruntime do. Fewer passes over activations; `fold_batchnorm` converts the first
                layout to this one. The pre-activation BN of each block cannot be merged exactly
                into the conv that follows it (zero padding would see the BN shift) and stays.
"""
import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from sem_repa_jax.nn.convs import Conv2D
from sem_repa_jax.nn.stacking import remat

DEPTHS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 14, 3), 100: (3, 13, 30, 3),
          200: (6, 26, 60, 6)}


@dataclasses.dataclass(frozen=True)
class IResNetConfig:
  layers: tuple = DEPTHS[100]          # IBasicBlocks per stage ([3, 13, 30, 3] for r100)
  widths: tuple = (64, 128, 256, 512)  # stage widths; the stem has widths[0] channels
  num_features: int = 512
  input_size: int = 112                # the FC expects (input_size / 16)^2 positions
  bn_eps: float = 1e-5                 # insightface torch models; mxnet conversions use 2e-5
  folded: bool = False
  # Inputs are mapped as x * input_scale + input_shift before the stem; (1, 0) for the torch
  # models. ONNX files that normalize inside the graph (Sub/Mul on 0..255 pixels) get the
  # equivalent affine on [-1, 1] inputs so callers always pass [-1, 1].
  input_scale: float = 1.0
  input_shift: float = 0.0

  @classmethod
  def from_depth(cls, depth: int, **kw):
    if depth not in DEPTHS:
      raise ValueError(f"IResNet depth {depth}: expected one of {sorted(DEPTHS)}")
    return cls(layers=DEPTHS[depth], **kw)

  def __post_init__(self):
    if len(self.layers) != 4 or len(self.widths) != 4 or min(self.layers) < 1:
      raise ValueError(f"IResNetConfig: layers {self.layers} and widths {self.widths} must have "
                       "4 entries each with at least one block per stage")
    if self.input_size % 16:
      raise ValueError(f"IResNetConfig.input_size {self.input_size}: must be divisible by 16")


class PReLU(nn.Module):
  """Per-channel PReLU (torch.nn.PReLU(C)): max(0, x) + alpha * min(0, x)."""
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    alpha = self.param("alpha", nn.with_logical_partitioning(
        nn.initializers.constant(0.25), ("channels",)), (x.shape[-1],), self.param_dtype)
    return jnp.where(x >= 0, x, alpha.astype(x.dtype) * x)


class ConvBN(nn.Module):
  """Conv (no bias) followed by inference BN, or their fold: one conv with bias."""
  features: int
  kernel: int
  stride: int
  config: IResNetConfig
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = Conv2D(self.features, (self.kernel, self.kernel), self.stride, self.kernel // 2,
               use_bias=self.config.folded, kernel_init=nn.initializers.normal(0.1),
               dtype=self.dtype, param_dtype=self.param_dtype, name="conv")(x)
    if not self.config.folded:
      x = _bn(self, "bn")(x)
    return x


def _bn(parent, name):
  return nn.BatchNorm(use_running_average=True, epsilon=parent.config.bn_eps,
                      dtype=parent.dtype, param_dtype=parent.param_dtype, name=name)


class IBasicBlock(nn.Module):
  """BN -> conv3x3 -> BN -> PReLU -> conv3x3(stride) -> BN, plus the (projected) shortcut."""
  features: int
  stride: int
  downsample: bool
  config: IResNetConfig
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, _=None):
    kw = dict(config=self.config, dtype=self.dtype, param_dtype=self.param_dtype)
    out = _bn(self, "bn1")(x)
    out = ConvBN(self.features, 3, 1, name="conv1", **kw)(out)
    out = PReLU(self.param_dtype, name="prelu")(out)
    out = ConvBN(self.features, 3, self.stride, name="conv2", **kw)(out)
    shortcut = ConvBN(self.features, 1, self.stride, name="downsample", **kw)(x) \
        if self.downsample else x
    out = out + shortcut
    out = nn.with_logical_constraint(out, ("batch", "height", "width", "channels"))
    return out, None


class IResNet(nn.Module):
  """faces (B, S, S, 3) RGB in [-1, 1] -> (B, num_features) unnormalized embeddings.

  remat: rematerialization policy of the blocks for gradients w.r.t. the input ('none', 'full',
  'dots', 'dots_no_batch'); the HJB face step differentiates through this network.
  unroll: True unrolls the scanned blocks of each stage into straight-line code (same parameter
  layout, no while loops). One compile per block instead of per stage; on CPU its speed was within
  the measurement noise of the scanned version (docs/arcface.md, Speed).
  """
  config: IResNetConfig = IResNetConfig()
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  remat: str = "none"
  unroll: bool = False

  @nn.compact
  def __call__(self, faces):
    c = self.config
    if faces.ndim != 4 or faces.shape[1:] != (c.input_size, c.input_size, 3):
      raise ValueError(f"IResNet: faces of shape {faces.shape}, expected (B, {c.input_size}, "
                       f"{c.input_size}, 3) channels-last RGB in [-1, 1]")
    kw = dict(config=c, dtype=self.dtype, param_dtype=self.param_dtype)
    x = faces.astype(self.dtype)
    if (c.input_scale, c.input_shift) != (1.0, 0.0):
      x = x * c.input_scale + c.input_shift
    x = ConvBN(c.widths[0], 3, 1, name="conv1", **kw)(x)
    x = PReLU(self.param_dtype, name="prelu")(x)
    block = remat(IBasicBlock, self.remat, owner="IResNet.remat")
    for i, (n, width) in enumerate(zip(c.layers, c.widths)):
      x, _ = block(width, 2, True, name=f"layer{i + 1}_0", **kw)(x)
      if n > 1:
        # The identical blocks after the first of a stage are scanned: one compile per stage.
        rest = nn.scan(block, variable_axes={"params": 0, "batch_stats": 0},
                       split_rngs={"params": True}, length=n - 1,
                       unroll=n - 1 if self.unroll else 1,
                       metadata_params={nn.PARTITION_NAME: "layers"})
        x, _ = rest(width, 1, False, name=f"layer{i + 1}_rest", **kw)(x, None)
    x = _bn(self, "bn2")(x)
    # PyTorch flattens NCHW: the FC's input index is c * H * W + h * W + w.
    x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)
    x = nn.Dense(c.num_features, dtype=self.dtype, param_dtype=self.param_dtype,
                 kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(),
                                                          ("mlp", "embed")), name="fc")(x)
    x = _bn(self, "features")(x)
    return x.astype(jnp.float32)


def build_iresnet(config: dict, dtype: str = "float32", param_dtype: str = "float32",
                  remat: str = "none", unroll: bool = False) -> IResNet:
  """JSON-friendly factory (the converter's config.json names it)."""
  cfg = dict(config)
  for k in ("layers", "widths"):
    if k in cfg:
      cfg[k] = tuple(int(v) for v in cfg[k])
  return IResNet(IResNetConfig(**cfg), dtype=jnp.dtype(dtype), param_dtype=jnp.dtype(param_dtype),
                 remat=remat, unroll=bool(unroll))


def config_to_json(config: IResNetConfig) -> dict:
  d = dataclasses.asdict(config)
  d["layers"], d["widths"] = list(config.layers), list(config.widths)
  return d


def fold_batchnorm(config: IResNetConfig, variables) -> tuple:
  """(config, variables) of the unfolded layout -> the folded layout (see the module docstring).

  Returns (folded config, folded variables); the folded model computes the same function up to
  float rounding.
  """
  if config.folded:
    return config, variables
  from flax.core import unfreeze
  variables = unfreeze(variables)
  params, stats = variables["params"], variables["batch_stats"]
  eps = config.bn_eps

  def fold(p, s):
    # p: {'conv': {'kernel'}, 'bn': {'scale', 'bias'}}, s: {'bn': {'mean', 'var'}}; kernels may
    # carry a leading scan axis, which broadcasting over the last axis handles.
    k = np.asarray(p["conv"]["kernel"], np.float64)
    g = np.asarray(p["bn"]["scale"], np.float64) / np.sqrt(np.asarray(s["bn"]["var"], np.float64)
                                                           + eps)
    b = np.asarray(p["bn"]["bias"], np.float64) - np.asarray(s["bn"]["mean"], np.float64) * g
    g = g.reshape(g.shape[:-1] + (1,) * 3 + g.shape[-1:])
    dt = np.asarray(p["conv"]["kernel"]).dtype
    return {"conv": {"kernel": (k * g).astype(dt), "bias": b.astype(dt)}}

  new_params, new_stats = {}, {}
  for name, p in params.items():
    s = stats.get(name, {})
    if name == "conv1":
      new_params[name] = fold(p, s)
    elif name.startswith("layer"):
      new_params[name] = {k: (fold(v, s[k]) if k in ("conv1", "conv2", "downsample") else v)
                          for k, v in p.items()}
      new_stats[name] = {"bn1": s["bn1"]}
    else:
      new_params[name] = p
      if s:
        new_stats[name] = s
  return dataclasses.replace(config, folded=True), {"params": new_params,
                                                     "batch_stats": new_stats}
