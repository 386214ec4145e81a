"""Converters from public PyTorch/ONNX checkpoints to Flax variables saved with Orbax.

Each kind is a module of this package that defines KIND (the CLI name), HELP (one line) and
`convert(src, dst, dtype) -> dst`, which hands its reader, Rules and target shapes to the shared
conversion.driver. `python -m conversion <kind> --src SRC --dst DST [--dtype]`.
"""
import importlib
import pkgutil

_INFRA = {"driver", "mapping", "writer", "safetensors_io", "torch_io", "pickle_io",
          "unet_rules"}


def available_kinds() -> dict:
  """{kind: module} for every converter module in this package."""
  kinds = {}
  for m in pkgutil.iter_modules(__path__):
    if m.name.startswith("_") or m.name in _INFRA:
      continue
    mod = importlib.import_module(f"{__name__}.{m.name}")
    if hasattr(mod, "KIND"):
      kinds[mod.KIND] = mod
  return kinds
