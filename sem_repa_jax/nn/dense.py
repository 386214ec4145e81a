"""Linear maps with logical axis names: over several trailing axes into several output axes.

flax's DenseGeneral builds its kernel through a flattened 2-D initializer, so logical-axis metadata
with one name per real axis fails under a mesh (the names are checked against the 2-D array).
`Projection` creates the kernel at its true shape, so ("embed", "heads", "kv") shards as written;
`dense` is the project's usual one: lecun-normal over the contracted axes, bias on the output axes.
"""
from typing import Any, Callable, Optional, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

from sem_repa_jax.nn.partitioning import param


class Projection(nn.Module):
  """x (..., *in) -> (..., *features): contracts the last `contract` axes with the kernel's first."""
  features: Sequence[int]
  kernel_axes: Sequence[Optional[str]]
  contract: int = 1
  bias_axes: Optional[Sequence[Optional[str]]] = None   # None: no bias
  kernel_init: Callable = nn.initializers.normal(0.02)
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    features = tuple(self.features)
    in_shape = tuple(x.shape[x.ndim - self.contract:])
    kernel = param(self, "kernel", self.kernel_init, in_shape + features, self.kernel_axes,
                   self.param_dtype)
    dims = (tuple(range(x.ndim - self.contract, x.ndim)), tuple(range(self.contract)))
    y = jax.lax.dot_general(x.astype(self.dtype), kernel.astype(self.dtype), (dims, ((), ())))
    if self.bias_axes is not None:
      bias = param(self, "bias", nn.initializers.zeros, features, self.bias_axes, self.param_dtype)
      y = y + bias.astype(self.dtype)
    return y


def dense(features: Union[int, Sequence[int]], axes: Sequence[Optional[str]], name: str,
          dtype: Any, param_dtype: Any, use_bias: bool = True,
          axis: Union[int, Sequence[int]] = -1,
          kernel_init: Optional[Callable] = None) -> Projection:
  """A Projection contracting the trailing `axis` (int, or a tuple of trailing negative axes) with
  logical axis names on the kernel (axes) and bias (their output part); lecun-normal (truncated)
  initialization over the contracted axes unless kernel_init is given."""
  features = (features,) if isinstance(features, int) else tuple(features)
  n_in = 1 if isinstance(axis, int) else len(axis)
  init = kernel_init or nn.initializers.variance_scaling(
      1.0, "fan_in", "truncated_normal", in_axis=tuple(range(n_in)),
      out_axis=tuple(range(n_in, n_in + len(features))))
  return Projection(features, tuple(axes), n_in, tuple(axes)[n_in:] if use_bias else None,
                    kernel_init=init, dtype=dtype, param_dtype=param_dtype, name=name)
