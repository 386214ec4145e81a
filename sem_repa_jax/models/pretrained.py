"""`load_pretrained(dir) -> (module, variables)` for any folder written by `python -m conversion`."""
import importlib
import json
import os
import shutil
from typing import Any, Callable, Optional, Union

import jax

from sem_repa_jax.models import registry


class PretrainedError(ValueError):
  """A converted-model folder that is missing pieces or names something that does not exist."""


def _import(factory: str):
  module_name, _, attr = factory.partition(":")
  try:
    return getattr(importlib.import_module(module_name), attr)
  except (ImportError, AttributeError) as e:
    raise PretrainedError(f"factory {factory!r} cannot be imported: {e}") from e


def read_pretrained_config(path: str) -> dict:
  cfg_path = os.path.join(path, "config.json")
  if not os.path.isfile(cfg_path):
    raise PretrainedError(f"{cfg_path}: missing; is {path} a folder written by `python -m conversion`?")
  with open(cfg_path) as f:
    cfg = json.load(f)
  for key in ("kind", "factory", "module_kwargs"):
    if key not in cfg:
      raise PretrainedError(f"{cfg_path}: no {key!r} entry (expected kind, factory, module_kwargs)")
  return cfg


def build_module(path: str, **overrides):
  """The Flax module described by `path`/config.json, with module kwargs overridden (e.g. dtype).
  The factory is the registry's for the folder's kind (models/registry.py), so folders keep loading
  when a factory moves."""
  cfg = read_pretrained_config(path)
  factory = registry.resolve(cfg["kind"], cfg["factory"])
  return _import(factory)(**{**cfg["module_kwargs"], **overrides})


Sharding = Union[None, jax.sharding.Sharding, Callable[[str, tuple], jax.sharding.Sharding]]


def load_pretrained(path: str, *, sharding: Sharding = None, cast_params_to: Optional[Any] = None,
                    **module_overrides):
  """Returns (module, variables) of a converted model.

  sharding: None (default device), one Sharding for every array, or a function
    (flat path like 'params/blocks/attn/to_q/kernel', shape) -> Sharding. Arrays are read straight
    into their shardings; the whole model is never materialized on one device.
  cast_params_to: cast the arrays on load (e.g. jnp.bfloat16); by default they keep the stored
    dtype. module_overrides replace module kwargs (e.g. dtype='bfloat16' for bf16 compute).
  """
  import orbax.checkpoint as ocp
  module = build_module(path, **module_overrides)
  var_dir = os.path.abspath(os.path.join(path, "variables"))
  if not os.path.isdir(var_dir):
    raise PretrainedError(f"{var_dir}: missing; is {path} a folder written by `python -m conversion`?")
  ckptr = ocp.StandardCheckpointer()
  meta = ckptr.metadata(var_dir)
  tree = getattr(getattr(meta, "item_metadata", meta), "tree", meta)

  def target(keypath, m):
    flat = "/".join(str(getattr(k, "key", k)) for k in keypath)
    if sharding is None:
      s = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    elif isinstance(sharding, jax.sharding.Sharding):
      s = sharding
    else:
      s = sharding(flat, tuple(m.shape))
    return jax.ShapeDtypeStruct(tuple(m.shape), cast_params_to or m.dtype, sharding=s)

  abstract = jax.tree_util.tree_map_with_path(
      target, tree, is_leaf=lambda x: hasattr(x, "shape") and hasattr(x, "dtype"))
  variables = ckptr.restore(var_dir, abstract)
  ckptr.close()
  return module, variables


def is_pretrained_folder(path: str) -> bool:
  """A folder this project wrote with save_pretrained: config.json naming a kind and a factory."""
  try:
    with open(os.path.join(path, "config.json")) as f:
      cfg = json.load(f)
  except (OSError, ValueError):
    return False
  return isinstance(cfg, dict) and {"kind", "factory", "module_kwargs"} <= set(cfg)


def check_replaceable(dst: str) -> None:
  """DST may be written only if it is absent, an empty folder, or an earlier save_pretrained
  folder: a user's file or folder of anything else is never replaced."""
  if not os.path.exists(dst):
    return
  if not os.path.isdir(dst):
    raise FileExistsError(f"{dst} is a file; the output must be a new or empty folder, or one "
                          "this tool wrote")
  if os.listdir(dst) and not is_pretrained_folder(dst):
    raise FileExistsError(f"{dst} holds files this tool did not write (no config.json with a "
                          "'kind'); choose a new or empty folder, or remove it yourself")


def process_alive(pid: int) -> bool:
  """Whether a process of this machine has the id `pid` (a leftover's writer may still run)."""
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def remove_stale_leftovers(dst: str) -> list[str]:
  """Removes `DST.partial-<pid>` / `DST.old-<pid>` folders that an interrupted save of a process
  no longer running left beside DST; returns what it removed."""
  parent, name = os.path.split(dst)
  removed = []
  for entry in os.listdir(parent) if os.path.isdir(parent) else []:
    for marker in (".partial-", ".old-"):
      if entry.startswith(name + marker) and entry[len(name + marker):].isdigit() \
          and not process_alive(int(entry[len(name + marker):])):
        shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)
        removed.append(os.path.join(parent, entry))
  return removed


def save_pretrained(dst: str, *, kind: str, module_kwargs: dict, variables, source: str = "",
                    overwrite: bool = True, factory: str | None = None) -> str:
  """Writes DST/config.json (kind, factory, module_kwargs, source) + DST/variables (Orbax).

  The folder appears whole or not at all: everything is written under a temporary sibling and
  renamed into place, so an interrupted save never leaves a half-written DST (the leftovers of one
  are removed by the next save to DST). DST must be absent, empty or an earlier saved folder
  (`check_replaceable`). Only process 0
  writes when `variables` are numpy arrays; jax arrays are saved collectively by all processes.
  `factory` defaults to the registry's entry for `kind` (models/registry.py).
  """
  import orbax.checkpoint as ocp
  factory = factory or registry.factory_of(kind)
  dst = os.path.abspath(dst)
  if os.path.exists(dst) and not overwrite:
    raise FileExistsError(f"{dst} exists; pass overwrite=True to replace it")
  check_replaceable(dst)
  os.makedirs(os.path.dirname(dst), exist_ok=True)
  remove_stale_leftovers(dst)
  tmp = f"{dst}.partial-{os.getpid()}"
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  try:
    meta = {"kind": kind, "factory": factory, "module_kwargs": module_kwargs, "source": source}
    with open(os.path.join(tmp, "config.json"), "w") as f:
      json.dump(meta, f, indent=2, sort_keys=True)
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(os.path.join(tmp, "variables"), variables)
    ckptr.wait_until_finished()
    ckptr.close()
    if os.path.exists(dst):
      old = f"{dst}.old-{os.getpid()}"
      os.replace(dst, old)
      os.replace(tmp, dst)
      shutil.rmtree(old, ignore_errors=True)
    else:
      os.replace(tmp, dst)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return dst
