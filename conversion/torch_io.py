"""Reading PyTorch `.pth`/`.pt` state dicts into numpy, with torch imported only when needed.

torch is a test requirement of this project, not a runtime one: users without it are told what to
install (or which torch-free file format to use instead).
"""
import os

import numpy as np

from conversion.safetensors_io import CheckpointError


def _import_torch(path: str, alternative: str):
  try:
    import torch
  except ImportError as e:
    raise CheckpointError(f"{path}: reading a PyTorch checkpoint needs torch; `pip install torch` "
                          f"(the CPU build is enough){alternative}") from e
  return torch


def read_state_dict(path: str, alternative: str = "") -> dict[str, np.ndarray]:
  """{name: float array} of a torch.save'd state dict.

  Accepts a bare state dict or one wrapped as {'state_dict': ...} / {'model': ...}, and strips the
  'module.' prefix DataParallel adds. Loads with weights_only=True: no pickled code is executed.
  alternative: appended to the missing-torch message (e.g. "or pass the .onnx file instead").
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: no such checkpoint file")
  torch = _import_torch(path, alternative)
  try:
    obj = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # torch raises many types for corrupt or non-weights pickles
    raise CheckpointError(f"{path}: cannot load as a PyTorch state dict: {e}") from e
  for wrapper in ("state_dict", "model"):
    if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
      obj = obj[wrapper]
  if not isinstance(obj, dict) or not obj:
    raise CheckpointError(f"{path}: expected a state dict (name -> tensor), got {type(obj).__name__}")
  out = {}
  for name, value in obj.items():
    if not hasattr(value, "detach"):
      raise CheckpointError(f"{path}: entry {name!r} is a {type(value).__name__}, not a tensor")
    if name.startswith("module."):
      name = name[len("module."):]
    t = value.detach().cpu()
    if t.is_floating_point() and t.dtype != torch.float64:
      t = t.float()
    out[name] = t.numpy()
  return out
