"""A linear map over several trailing axes into several output axes (e.g. embed -> heads x kv).

flax's DenseGeneral builds its kernel through a flattened 2-D initializer, so logical-axis metadata
with one name per real axis fails under a mesh (the names are checked against the 2-D array). This
module creates the kernel at its true shape, so ("embed", "heads", "kv") shards as written.
"""
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


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
    kernel = self.param("kernel", nn.with_logical_partitioning(self.kernel_init,
                                                               tuple(self.kernel_axes)),
                        in_shape + features, self.param_dtype)
    dims = (tuple(range(x.ndim - self.contract, x.ndim)), tuple(range(self.contract)))
    y = jax.lax.dot_general(x.astype(self.dtype), kernel.astype(self.dtype), (dims, ((), ())))
    if self.bias_axes is not None:
      bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros,
                                                             tuple(self.bias_axes)),
                        features, self.param_dtype)
      y = y + bias.astype(self.dtype)
    return y
