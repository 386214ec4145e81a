"""Random weights for a Flax module without compiling its init (for timing and memory, not parity).

`module.init` under jit compiles the whole model once more before the program being measured;
at the real 5b size that costs a minute of GPU time, on CPU most of a smoke run. Here the init is
only traced (jax.eval_shape) and each leaf is drawn by one small jitted program: scales (norm
weights) 1, biases 0, everything else N(0, 0.02).
"""
import functools

import jax
import jax.numpy as jnp


@functools.partial(jax.jit, static_argnums=(1, 2))
def _normal(key, shape, dtype):
  return (0.02 * jax.random.normal(key, shape, jnp.float32)).astype(dtype)


def random_variables(module, *args, seed: int = 0, method=None):
  """Variables shaped as module.init(key, *args) makes them, drawn without compiling the model."""
  shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), *args, method=method))
  leaves, tree = jax.tree_util.tree_flatten_with_path(shapes)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  values = []
  for (path, leaf), key in zip(leaves, keys):
    name = str(getattr(path[-1], "key", path[-1]))
    if name in ("scale", "weight") and len(leaf.shape) == 1:
      values.append(jnp.ones(leaf.shape, leaf.dtype))
    elif name == "bias":
      values.append(jnp.zeros(leaf.shape, leaf.dtype))
    else:   # one compile per distinct shape, a few dozen in a whole model
      values.append(_normal(key, tuple(leaf.shape), jnp.dtype(leaf.dtype)))
  return jax.tree_util.tree_unflatten(tree, values)
