"""Writes a converted model: DST/config.json (how to rebuild the module) + DST/variables (Orbax).

The folder appears whole or not at all: everything is written under a temporary sibling and renamed
into place, so an interrupted conversion never leaves a half-written DST.
"""
import json
import os
import shutil

import numpy as np

from conversion.mapping import unflatten

DTYPES = {"float32": np.float32, "bfloat16": None, "float16": np.float16}


def parse_dtype(name: str):
  import ml_dtypes
  table = {"float32": np.dtype(np.float32), "bfloat16": np.dtype(ml_dtypes.bfloat16),
           "float16": np.dtype(np.float16)}
  if name not in table:
    raise ValueError(f"--dtype {name!r}: expected one of {sorted(table)}")
  return table[name]


def save_converted(dst: str, *, kind: str, factory: str, module_kwargs: dict, flat_variables: dict,
                   source: str, overwrite: bool = True) -> str:
  """Saves flat {'params/a/kernel': array} variables and the recipe for the module.

  factory: 'package.module:callable' that returns the Flax module from **module_kwargs.
  """
  import orbax.checkpoint as ocp
  dst = os.path.abspath(dst)
  if os.path.exists(dst) and not overwrite:
    raise FileExistsError(f"{dst} exists; pass overwrite=True to replace it")
  parent = os.path.dirname(dst)
  os.makedirs(parent, exist_ok=True)
  tmp = f"{dst}.partial-{os.getpid()}"
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  try:
    meta = {"kind": kind, "factory": factory, "module_kwargs": module_kwargs, "source": source}
    with open(os.path.join(tmp, "config.json"), "w") as f:
      json.dump(meta, f, indent=2, sort_keys=True)
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(os.path.join(tmp, "variables"), unflatten(flat_variables))
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
