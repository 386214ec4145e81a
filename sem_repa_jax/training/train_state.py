"""TrainState: everything a training step reads and writes, as one sharded pytree.

Frozen modules (SemanticREPA stage 2 keeps two alignment modules fixed) live in `frozen`: they are
saved and sharded with the state, reach the loss through `merge`, and get neither gradients nor
optimizer moments.
"""
import fnmatch
from typing import Any, Callable

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import traverse_util

from sem_repa_jax.training import sharding as sharding_lib
from sem_repa_jax.training.optimizers import EMA


@flax.struct.dataclass
class TrainState:
  step: jax.Array            # int32: optimizer steps taken (skipped ones included)
  params: Any                # trained part of the variables, e.g. {'params': {...}}
  frozen: Any                # the rest of the variables (same nesting, disjoint leaves)
  opt_state: Any
  ema: Any                   # EMA of `params`, or None
  rng: jax.Array             # uint32[2]; the step's key is fold_in(rng, step), so resume is exact
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)
  ema_decay: float = flax.struct.field(pytree_node=False, default=0.0)

  def variables(self):
    """The full variables (trained + frozen) for module.apply."""
    return merge(self.params, self.frozen)

  def apply_gradients(self, grads) -> "TrainState":
    updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
    params = optax.apply_updates(self.params, updates)
    ema = None if self.ema is None else EMA(self.ema_decay).update(self.ema, params)
    return self.replace(step=self.step + 1, params=params, opt_state=opt_state, ema=ema)


def split(variables, frozen_prefixes=()) -> tuple[dict, dict]:
  """(trained, frozen): leaves whose '/'-joined path starts with one of `frozen_prefixes` are frozen.

  e.g. frozen_prefixes=('params/structure_alignment', 'params/id_alignment').
  """
  flat = traverse_util.flatten_dict(dict(variables), sep="/")
  prefixes = tuple(p.rstrip("/") for p in frozen_prefixes)
  for p in prefixes:
    if not any(k == p or k.startswith(p + "/") for k in flat):
      raise ValueError(f"frozen prefix {p!r} matches no variable; variables start with "
                       f"{sorted({k.split('/')[0] + '/' + k.split('/')[1] for k in flat if '/' in k})}")
  is_frozen = lambda k: any(k == p or k.startswith(p + "/") for p in prefixes)
  trained = {k: v for k, v in flat.items() if not is_frozen(k)}
  frozen = {k: v for k, v in flat.items() if is_frozen(k)}
  return (traverse_util.unflatten_dict(trained, sep="/"),
          traverse_util.unflatten_dict(frozen, sep="/"))


def frozen_outside(variables, trainable) -> tuple[str, ...]:
  """The frozen_prefixes (for `split`) that leave trained exactly the leaves whose '/'-joined path
  matches one of the fnmatch patterns `trainable` ('*' crosses '/'): the largest subtrees without
  such a leaf, so the list stays short. e.g. StableAnimator's official trainable set
  ('params/pose_net/*', 'params/face_encoder/*', 'params/unet/*attentions_*').
  A pattern that matches nothing is an error (a typo would silently freeze a module)."""
  flat = traverse_util.flatten_dict(dict(variables), sep="/")
  patterns = tuple(trainable)
  unmatched = [p for p in patterns if not any(fnmatch.fnmatchcase(k, p) for k in flat)]
  if unmatched:
    raise ValueError(f"trainable pattern(s) {unmatched} match no variable; variables start with "
                     f"{sorted({'/'.join(k.split('/')[:2]) for k in flat})}")
  trained = [k.split("/") for k in flat if any(fnmatch.fnmatchcase(k, p) for p in patterns)]
  holds_trained = {"/".join(parts[:i]) for parts in trained for i in range(1, len(parts) + 1)}
  prefixes = []

  def walk(node, path):
    if path and path not in holds_trained:
      prefixes.append(path)
    elif isinstance(node, dict):
      for name, child in node.items():
        walk(child, f"{path}/{name}" if path else name)
  walk(traverse_util.unflatten_dict(flat, sep="/"), "")
  return tuple(prefixes)


def merge(trained, frozen) -> dict:
  flat = traverse_util.flatten_dict(dict(trained), sep="/")
  flat.update(traverse_util.flatten_dict(dict(frozen), sep="/"))
  return traverse_util.unflatten_dict(flat, sep="/")


def _as_key_data(rng):
  if isinstance(rng, int):
    return jax.random.PRNGKey(rng)
  if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
    return jax.random.key_data(rng)
  return rng


def make_train_state(init_fn: Callable, *init_args, tx: optax.GradientTransformation, mesh,
                     rules, rng, frozen_prefixes=(), ema_decay: float = 0.0):
  """Plans a sharded TrainState without allocating it.

  init_fn(*init_args) returns the variables (e.g. `module.init`, logical boxes allowed).
  Returns (abstract_state, init): `abstract_state` has ShapeDtypeStructs carrying the target
  NamedShardings (what a checkpoint restores into); `init()` builds the state directly in its
  shards. Optimizer moments are sharded like their params; counters and scales are replicated.
  """
  rng = _as_key_data(rng)
  abstract_vars = jax.eval_shape(init_fn, *init_args)
  var_shardings = sharding_lib.logical_shardings(abstract_vars, mesh, rules)
  abstract_vars = nn.meta.unbox(abstract_vars)
  sharding_lib.check_divisible(abstract_vars, var_shardings, "variable")

  def build(rng, *args):
    trained, frozen = split(nn.meta.unbox(init_fn(*args)), frozen_prefixes)
    return TrainState(step=jnp.zeros([], jnp.int32), params=trained, frozen=frozen,
                      opt_state=tx.init(trained),
                      ema=jax.tree.map(jnp.copy, trained) if ema_decay > 0 else None,
                      rng=rng, tx=tx, ema_decay=float(ema_decay))

  abstract = jax.eval_shape(build, rng, *init_args)
  trained_sh, frozen_sh = split(var_shardings, frozen_prefixes)
  rep = sharding_lib.replicated(mesh)
  shardings = abstract.replace(
      step=rep, params=trained_sh, frozen=frozen_sh, rng=rep,
      opt_state=sharding_lib.shardings_like(abstract.opt_state, abstract.params, trained_sh, mesh),
      ema=None if abstract.ema is None else trained_sh)
  abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          abstract, shardings)

  def init():
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      return jax.jit(build, out_shardings=shardings)(rng, *init_args)
  return abstract, init


def shardings_of(tree):
  """The .sharding of every leaf (abstract or concrete)."""
  return jax.tree.map(lambda x: x.sharding, tree)
