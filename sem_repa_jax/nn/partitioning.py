"""How a parameter is declared: its initializer carrying logical axis names, and dtypes named in JSON.

Every model declares parameters through these, so the logical names that the config's sharding rules
map to mesh axes are written in one way everywhere (design.md: model code never names a mesh axis).
"""
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp


def partitioned(init: Callable, axes: Sequence[Optional[str]]) -> Callable:
  """`init` whose arrays carry the logical axis names `axes` (one per array axis)."""
  return nn.with_logical_partitioning(init, tuple(axes))


def param(module: nn.Module, name: str, init: Callable, shape: Sequence[int],
          axes: Sequence[Optional[str]], dtype: Any):
  """module.param(name, ...) with logical axis names; returns the (unboxed) array."""
  return module.param(name, partitioned(init, axes), tuple(shape), dtype)


def as_dtype(name: Any):
  """A dtype from its JSON name ('bfloat16') or a dtype passed through unchanged."""
  return jnp.dtype(name) if isinstance(name, str) else name
