"""FID's InceptionV3 (pytorch-fid's `FIDInceptionA/C/E` variant of torchvision's Inception3) in Flax.

What FID scores are computed with: the 2015-12-05 TensorFlow Inception graph as pytorch-fid
rebuilds it (weights file pt_inception-2015-12-05-6726825d.pth). It differs from torchvision's
ImageNet InceptionV3 in three places, kept here: average pools in the A, C and E_1 blocks leave
the zero padding out of the mean (count_include_pad=False), and the last E block (Mixed_7c) pools
its branch_pool with a max pool instead of an average.

`apply(v, images)`: (B, H, W, 3) RGB in [-1, 1] -> (B, 2048) pool3 features. Images are first
resized to `input_size` (299) by bilinear interpolation with half-pixel centres and no antialias
(torch's F.interpolate(mode='bilinear', align_corners=False)), as pytorch-fid's resize_input does;
pytorch-fid's own [0, 1] -> [-1, 1] step is our input convention. Every conv is torchvision's
BasicConv2d: conv without bias, BatchNorm (eps 1e-3, running statistics), ReLU. Parameter names
are torchvision's module names (Conv2d_1a_3x3/conv, Mixed_5b/branch1x1/bn, ...). The 1008-way fc
of the file is not part of the network: FID reads the pool features.
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

FEATURES = 2048


def resize_matrix(size_in: int, size_out: int, align_corners: bool = False) -> np.ndarray:
  """(size_out, size_in) weights of 1-D linear interpolation as torch computes it with
  align_corners=False: source = (i + 0.5) * in / out - 0.5, clamped at 0, neighbours clamped at
  the last pixel (align_corners=True: source = i * (in - 1) / (out - 1), RAFT-small's flow
  upsampling). The coordinates are float32 as in torch's CPU kernel, so the weights are its
  weights to the last bit (float64 ones differ by up to ~1e-6 at large coordinates)."""
  if align_corners:
    scale = np.float32(size_in - 1) / np.float32(max(size_out - 1, 1))
    src = np.arange(size_out, dtype=np.float32) * scale
  else:
    scale = np.float32(size_in) / np.float32(size_out)
    src = np.maximum((np.arange(size_out, dtype=np.float32) + np.float32(0.5)) * scale
                     - np.float32(0.5), np.float32(0.0))
  i0 = np.minimum(np.floor(src).astype(np.int64), size_in - 1)
  i1 = np.minimum(i0 + 1, size_in - 1)
  lam = (src - i0.astype(np.float32)).astype(np.float64)
  m = np.zeros((size_out, size_in), np.float64)
  np.add.at(m, (np.arange(size_out), i0), 1.0 - lam)
  np.add.at(m, (np.arange(size_out), i1), lam)
  return m.astype(np.float32)


def resize_bilinear(images, height: int, width: int):
  """(B, H, W, C) -> (B, height, width, C), torch's bilinear with align_corners=False."""
  _, h, w, _ = images.shape
  if (h, w) == (height, width):
    return images
  mh, mw = jnp.asarray(resize_matrix(h, height)), jnp.asarray(resize_matrix(w, width))
  return jnp.einsum("ph,qw,bhwc->bpqc", mh, mw, images.astype(jnp.float32))


class BasicConv2d(nn.Module):
  features: int
  kernel: tuple = (1, 1)
  stride: int = 1
  padding: tuple = (0, 0)
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = nn.Conv(self.features, self.kernel, strides=self.stride,
                padding=[(p, p) for p in self.padding], use_bias=False, dtype=self.dtype,
                param_dtype=self.param_dtype, name="conv")(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, dtype=jnp.float32,
                     param_dtype=self.param_dtype, name="bn")(x)
    return nn.relu(x).astype(self.dtype)


def _avg_pool(x):
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool(x, stride=2, pad=0):
  return nn.max_pool(x, (3, 3), strides=(stride, stride), padding=((pad, pad), (pad, pad)))


class _Block(nn.Module):
  """One Mixed_* block: `kind` is its torchvision class (A, B, C, D, E_1, E_2)."""
  kind: str
  width: int = 0   # pool_features of A, channels_7x7 of C
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def conv(self, name, features, kernel=(1, 1), stride=1, padding=(0, 0)):
    return BasicConv2d(features, kernel, stride, padding, dtype=self.dtype,
                       param_dtype=self.param_dtype, name=name)

  @nn.compact
  def __call__(self, x):
    c = self.conv
    if self.kind == "A":
      b1 = c("branch1x1", 64)(x)
      b5 = c("branch5x5_2", 64, (5, 5), padding=(2, 2))(c("branch5x5_1", 48)(x))
      b3 = c("branch3x3dbl_1", 64)(x)
      b3 = c("branch3x3dbl_3", 96, (3, 3), padding=(1, 1))(
          c("branch3x3dbl_2", 96, (3, 3), padding=(1, 1))(b3))
      return jnp.concatenate([b1, b5, b3, c("branch_pool", self.width)(_avg_pool(x))], -1)
    if self.kind == "B":
      b3 = c("branch3x3", 384, (3, 3), stride=2)(x)
      bd = c("branch3x3dbl_2", 96, (3, 3), padding=(1, 1))(c("branch3x3dbl_1", 64)(x))
      bd = c("branch3x3dbl_3", 96, (3, 3), stride=2)(bd)
      return jnp.concatenate([b3, bd, _max_pool(x)], -1)
    if self.kind == "C":
      w = self.width
      b1 = c("branch1x1", 192)(x)
      b7 = c("branch7x7_1", w)(x)
      b7 = c("branch7x7_3", 192, (7, 1), padding=(3, 0))(
          c("branch7x7_2", w, (1, 7), padding=(0, 3))(b7))
      bd = c("branch7x7dbl_1", w)(x)
      for i, (k, p, f) in enumerate([((7, 1), (3, 0), w), ((1, 7), (0, 3), w),
                                     ((7, 1), (3, 0), w), ((1, 7), (0, 3), 192)], start=2):
        bd = c(f"branch7x7dbl_{i}", f, k, padding=p)(bd)
      return jnp.concatenate([b1, b7, bd, c("branch_pool", 192)(_avg_pool(x))], -1)
    if self.kind == "D":
      b3 = c("branch3x3_2", 320, (3, 3), stride=2)(c("branch3x3_1", 192)(x))
      b7 = c("branch7x7x3_1", 192)(x)
      b7 = c("branch7x7x3_2", 192, (1, 7), padding=(0, 3))(b7)
      b7 = c("branch7x7x3_3", 192, (7, 1), padding=(3, 0))(b7)
      b7 = c("branch7x7x3_4", 192, (3, 3), stride=2)(b7)
      return jnp.concatenate([b3, b7, _max_pool(x)], -1)
    # E_1 / E_2
    b1 = c("branch1x1", 320)(x)
    b3 = c("branch3x3_1", 384)(x)
    b3 = jnp.concatenate([c("branch3x3_2a", 384, (1, 3), padding=(0, 1))(b3),
                          c("branch3x3_2b", 384, (3, 1), padding=(1, 0))(b3)], -1)
    bd = c("branch3x3dbl_2", 384, (3, 3), padding=(1, 1))(c("branch3x3dbl_1", 448)(x))
    bd = jnp.concatenate([c("branch3x3dbl_3a", 384, (1, 3), padding=(0, 1))(bd),
                          c("branch3x3dbl_3b", 384, (3, 1), padding=(1, 0))(bd)], -1)
    pooled = _avg_pool(x) if self.kind == "E_1" else _max_pool(x, stride=1, pad=1)
    return jnp.concatenate([b1, b3, bd, c("branch_pool", 192)(pooled)], -1)


# (name, kind, width) of the Mixed blocks in order.
MIXED = [("Mixed_5b", "A", 32), ("Mixed_5c", "A", 64), ("Mixed_5d", "A", 64), ("Mixed_6a", "B", 0),
         ("Mixed_6b", "C", 128), ("Mixed_6c", "C", 160), ("Mixed_6d", "C", 160),
         ("Mixed_6e", "C", 192), ("Mixed_7a", "D", 0), ("Mixed_7b", "E_1", 0),
         ("Mixed_7c", "E_2", 0)]


class FIDInceptionV3(nn.Module):
  """See the module docstring. input_size: the resize target (299; tests use smaller, >= 75)."""
  input_size: int = 299
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images):
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"FIDInceptionV3: expected images (B, H, W, 3); got {images.shape}")
    if self.input_size < 75:
      raise ValueError(f"FIDInceptionV3: input_size {self.input_size} < 75, the smallest the "
                       "strided trunk accepts")
    x = resize_bilinear(images, self.input_size, self.input_size).astype(self.dtype)
    conv = lambda name, f, k=(1, 1), s=1, p=(0, 0): BasicConv2d(
        f, k, s, p, dtype=self.dtype, param_dtype=self.param_dtype, name=name)
    x = conv("Conv2d_1a_3x3", 32, (3, 3), 2)(x)
    x = conv("Conv2d_2a_3x3", 32, (3, 3))(x)
    x = _max_pool(conv("Conv2d_2b_3x3", 64, (3, 3), p=(1, 1))(x))
    x = conv("Conv2d_3b_1x1", 80)(x)
    x = _max_pool(conv("Conv2d_4a_3x3", 192, (3, 3))(x))
    for name, kind, width in MIXED:
      x = _Block(kind, width, dtype=self.dtype, param_dtype=self.param_dtype, name=name)(x)
    return jnp.mean(x.astype(jnp.float32), axis=(1, 2))


def build(input_size: int = 299, dtype: str = "float32", param_dtype: str = "float32"
          ) -> FIDInceptionV3:
  """JSON-friendly factory (the registry's entry for kind 'fid-inception')."""
  return FIDInceptionV3(input_size=int(input_size), dtype=jnp.dtype(dtype),
                        param_dtype=jnp.dtype(param_dtype))
