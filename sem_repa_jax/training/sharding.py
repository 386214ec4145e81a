"""Logical axis names -> NamedShardings, sharded initialization, and global batches.

Model code names logical axes ('embed', 'mlp', 'batch', ...); `config.logical_axis_rules` maps them
to mesh axes. Everything here starts from abstract shapes (jax.eval_shape) so that no full copy of a
large model ever exists on one device.
"""
import re

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def axis_rules(config) -> tuple:
  """`config.logical_axis_rules` as the tuple of (logical, mesh axes) pairs flax expects."""
  return tuple((name, tuple(a) if isinstance(a, (list, tuple)) else a)
               for name, a in config.logical_axis_rules)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def logical_shardings(abstract_boxed, mesh: Mesh, rules) -> object:
  """NamedShardings for a tree that may hold nn.LogicallyPartitioned boxes (unboxed structure).

  Leaves without logical names are replicated.
  """
  specs = nn.get_partition_spec(abstract_boxed)
  return nn.logical_to_mesh_sharding(specs, mesh, rules)


def check_divisible(abstract, shardings, what: str) -> None:
  """Raises a clear error when a sharded dimension is not divisible by its mesh axes."""
  def check(path, x, s):
    for dim, (size, axes) in enumerate(zip(x.shape, tuple(s.spec) + (None,) * x.ndim)):
      if axes is None:
        continue
      n = int(np.prod([s.mesh.shape[a] for a in (axes if isinstance(axes, tuple) else (axes,))]))
      if size % n:
        raise ValueError(f"{what} {jax.tree_util.keystr(path)} of shape {x.shape}: dimension {dim} "
                         f"({size}) is sharded over mesh axes {axes} of total size {n}, which does "
                         "not divide it; change config.logical_axis_rules or config.mesh.shape")
  jax.tree_util.tree_map_with_path(check, abstract, shardings)


def init_sharded(init_fn, mesh: Mesh, rules, *args):
  """Runs `init_fn(*args)` (e.g. module.init) with its outputs created directly in their shards.

  Returns (variables without logical boxes, their NamedShardings).
  """
  abstract = jax.eval_shape(init_fn, *args)
  shardings = logical_shardings(abstract, mesh, rules)
  unboxed_abstract = nn.meta.unbox(abstract)
  check_divisible(unboxed_abstract, shardings, "parameter")

  def init(*a):
    return nn.meta.unbox(init_fn(*a))

  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    variables = jax.jit(init, out_shardings=shardings)(*args)
  return variables, shardings


def shardings_like(tree, named_tree, named_shardings, mesh: Mesh):
  """Shardings for `tree` (e.g. an optimizer state) from the shardings of `named_tree` (params).

  A leaf of `tree` whose key path contains the key path of a leaf of `named_tree` and has the same
  shape takes that leaf's sharding (optax keeps moments as param-shaped trees: `mu['params'][...]`);
  everything else (step counts, quantization scales) is replicated.
  """
  by_path = {}
  for (path, x), s in zip(jax.tree_util.tree_flatten_with_path(named_tree)[0],
                          jax.tree.leaves(named_shardings)):
    by_path[jax.tree_util.keystr(path)] = (tuple(x.shape), s)
  pattern = re.compile("|".join(re.escape(k) for k in sorted(by_path, key=len, reverse=True))) \
      if by_path else None

  def pick(path, x):
    key = jax.tree_util.keystr(path)
    if pattern is not None:
      for m in pattern.finditer(key):
        shape, s = by_path[m.group(0)]
        if shape == tuple(x.shape):
          return s
    return replicated(mesh)
  return jax.tree_util.tree_map_with_path(pick, tree)


def batch_sharding(mesh: Mesh, rules, ndim: int = 1) -> NamedSharding:
  """Sharding of a batch array: the leading axis follows the 'batch' rule (data x fsdp)."""
  return nn.logical_to_mesh_sharding(P("batch", *([None] * (ndim - 1))), mesh, rules)


def shard_batch(batch, mesh: Mesh, rules):
  """Turns this process's slice of the batch (numpy tree) into global jax.Arrays.

  Every process passes a different, equally sized slice; the global batch is their concatenation
  in process order, split over the mesh axes that the 'batch' rule names.
  """
  def put(x):
    x = np.asarray(x)
    sharding = batch_sharding(mesh, rules, x.ndim)
    global_shape = (x.shape[0] * jax.process_count(),) + x.shape[1:]
    return jax.make_array_from_process_local_data(sharding, x, global_shape)
  return jax.tree.map(put, batch)
