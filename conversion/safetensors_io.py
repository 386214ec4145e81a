"""Memory-mapped reading of safetensors checkpoints, bfloat16 included, without torch.

A checkpoint folder is what users download: config.json plus one `*.safetensors` file, or several
with an `*.safetensors.index.json` that maps each tensor name to its file.
"""
import json
import os
import re
import struct
from dataclasses import dataclass

import ml_dtypes
import numpy as np

_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
    "BOOL": np.bool_,
}


class CheckpointError(ValueError):
  """A checkpoint file or folder that is missing, corrupt or not what was expected."""


@dataclass(frozen=True)
class TensorInfo:
  name: str
  file: str
  dtype: np.dtype
  shape: tuple
  begin: int   # absolute byte offset in the file
  end: int


def read_header(path: str) -> dict[str, TensorInfo]:
  """Parses one .safetensors header; raises CheckpointError naming the file when it is corrupt."""
  try:
    size = os.path.getsize(path)
    with open(path, "rb") as f:
      raw = f.read(8)
      if len(raw) < 8:
        raise CheckpointError(f"{path}: file too short to be a safetensors file ({size} bytes)")
      (n,) = struct.unpack("<Q", raw)
      if n <= 0 or 8 + n > size:
        raise CheckpointError(f"{path}: header length {n} does not fit in a file of {size} bytes "
                              "(truncated or not a safetensors file)")
      header = json.loads(f.read(n))
  except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
    raise CheckpointError(f"{path}: cannot read safetensors header: {e}") from e
  header.pop("__metadata__", None)
  infos = {}
  for name, h in header.items():
    if h.get("dtype") not in _DTYPES:
      raise CheckpointError(f"{path}: tensor {name!r} has unsupported dtype {h.get('dtype')!r}")
    dtype = np.dtype(_DTYPES[h["dtype"]])
    begin, end = h["data_offsets"]
    shape = tuple(h["shape"])
    if end - begin != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize or 8 + n + end > size:
      raise CheckpointError(f"{path}: tensor {name!r} of shape {shape} {h['dtype']} does not match "
                            f"its byte range [{begin}, {end}) (file truncated or corrupt)")
    infos[name] = TensorInfo(name, path, dtype, shape, 8 + n + begin, 8 + n + end)
  return infos


class SafetensorsCheckpoint:
  """All tensors of a checkpoint file or folder, read lazily through memory maps.

  variant: in a folder, the weights of that variant (diffusers' `variant`, e.g. 'fp16' reads
  diffusion_pytorch_model.fp16.safetensors, or the shards its index.fp16.json names); None reads
  the files without one."""

  def __init__(self, src: str, variant: str | None = None):
    self.src = src
    self.infos: dict[str, TensorInfo] = {}
    for path in _checkpoint_files(src, variant):
      for name, info in read_header(path).items():
        if name in self.infos:
          raise CheckpointError(f"{src}: tensor {name!r} appears in both {self.infos[name].file} "
                                f"and {path}")
        self.infos[name] = info
    self._maps: dict[str, np.memmap] = {}

  def keys(self):
    return self.infos.keys()

  def shape(self, name: str) -> tuple:
    return self.infos[name].shape

  def get(self, name: str) -> np.ndarray:
    """A read-only view into the memory-mapped file (no copy until a transform makes one)."""
    info = self.infos[name]
    mm = self._maps.get(info.file)
    if mm is None:
      mm = self._maps[info.file] = np.memmap(info.file, dtype=np.uint8, mode="r")
    return mm[info.begin:info.end].view(info.dtype).reshape(info.shape)

  def files(self) -> list[str]:
    return sorted({i.file for i in self.infos.values()})

  def close(self):
    self._maps.clear()


_WEIGHTS = re.compile(r"^[^.]+?(?:\.(?P<variant>[^.-]+))?(?:-\d+-of-\d+)?\.safetensors$")
_INDEX = re.compile(r"^[^.]+\.safetensors\.index(?:\.(?P<variant>[^.]+))?\.json$")


def variant_of(filename: str) -> str | None:
  """The variant a weights or index file name carries ('fp16' for
  diffusion_pytorch_model.fp16.safetensors and ...safetensors.index.fp16.json), else None."""
  m = _WEIGHTS.match(filename) or _INDEX.match(filename)
  return m.group("variant") if m else None


def _checkpoint_files(src: str, variant: str | None = None) -> list[str]:
  if os.path.isfile(src):
    if variant is not None:
      raise CheckpointError(f"{src}: a variant ({variant!r}) selects files in a model folder; "
                            "this is a single file")
    return [src]
  if not os.path.isdir(src):
    raise CheckpointError(f"{src}: no such file or directory (expected a model folder with "
                          "config.json and *.safetensors)")
  names = os.listdir(src)
  held = sorted({variant_of(f) or "(no variant)" for f in names if _WEIGHTS.match(f)})
  names = [f for f in names if variant_of(f) == variant]
  if held and not any(_WEIGHTS.match(f) for f in names):
    wanted = f"weights of variant {variant!r}" if variant else "weights without a variant"
    raise CheckpointError(f"{src}: no {wanted}; it holds {', '.join(held)} (choose with --variant)")
  indexes = sorted(f for f in names if f.endswith(".json") and _INDEX.match(f))
  if len(indexes) > 1:
    raise CheckpointError(f"{src}: several index files {indexes}; keep one")
  if indexes:
    index_path = os.path.join(src, indexes[0])
    try:
      with open(index_path) as f:
        weight_map = json.load(f)["weight_map"]
    except (OSError, json.JSONDecodeError, KeyError) as e:
      raise CheckpointError(f"{index_path}: not a safetensors index (expected a 'weight_map'): {e}")
    files = sorted(set(weight_map.values()))
    missing = [f for f in files if not os.path.isfile(os.path.join(src, f))]
    if missing:
      raise CheckpointError(f"{index_path} names shard files that are missing: {missing}")
    return [os.path.join(src, f) for f in files]
  files = sorted(f for f in names if f.endswith(".safetensors"))
  if not files:
    raise CheckpointError(f"{src}: no *.safetensors file found (a diffusers/transformers model "
                          "folder saved with safe_serialization is expected)")
  return [os.path.join(src, f) for f in files]


def read_config(src: str, name: str = "config.json") -> dict:
  path = os.path.join(src, name)
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    raise CheckpointError(f"{path}: missing (the model folder needs its {name})") from None
  except json.JSONDecodeError as e:
    raise CheckpointError(f"{path}: not valid JSON: {e}") from None
