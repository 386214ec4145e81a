"""Writes a converted model: DST/config.json (how to rebuild the module) + DST/variables (Orbax),
atomically (see sem_repa_jax.models.pretrained.save_pretrained)."""
import numpy as np

from conversion.mapping import unflatten
from sem_repa_jax.models.pretrained import save_pretrained


def parse_dtype(name: str):
  import ml_dtypes
  table = {"float32": np.dtype(np.float32), "bfloat16": np.dtype(ml_dtypes.bfloat16),
           "float16": np.dtype(np.float16)}
  if name not in table:
    raise ValueError(f"--dtype {name!r}: expected one of {sorted(table)}")
  return table[name]


def save_converted(dst: str, *, kind: str, module_kwargs: dict, flat_variables: dict, source: str,
                   overwrite: bool = True, factory: str | None = None) -> str:
  """Saves flat {'params/a/kernel': array} variables and the recipe for the module.

  factory: 'package.module:callable' that returns the Flax module from **module_kwargs; by default
  the model registry's entry for `kind`.
  """
  return save_pretrained(dst, kind=kind, factory=factory, module_kwargs=module_kwargs,
                         variables=unflatten(flat_variables), source=source, overwrite=overwrite)
