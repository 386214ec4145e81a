"""The one path from a downloaded checkpoint to a converted folder, shared by every kind.

A converter module owns only what is its own: how it reads its source (`read`, e.g. `folder(...)`
for a diffusers/transformers folder), its Rules, the target shapes of its module and the module
kwargs its saved folder records. `convert` does the rest the same way for every kind: it builds the
module with the factory the registry names for the kind (the very one `load_pretrained` will use),
maps strictly (conversion.mapping), casts, and saves atomically (conversion.writer).
"""
import dataclasses
import importlib
import os
from typing import Any, Callable, Optional

import numpy as np

from conversion import mapping
from conversion.mapping import ConversionError
from conversion.safetensors_io import SafetensorsCheckpoint, read_config
from conversion.writer import parse_dtype, save_converted

# (source, model config) of a SRC path and a weights variant (None: the default weights).
Reader = Callable[[str, Optional[str]], tuple[mapping.Source, Any]]


def standard_kwargs(config, dtype: str) -> dict:
  """What most saved folders record: the config dataclass, compute and parameter dtype."""
  return {"config": dataclasses.asdict(config), "dtype": dtype, "param_dtype": dtype}


def build(kind: str, module_kwargs: dict):
  """The Flax module of `kind` from the factory the model registry names for it."""
  from sem_repa_jax.models import registry
  module_name, _, attr = registry.factory_of(kind).partition(":")
  return getattr(importlib.import_module(module_name), attr)(**module_kwargs)


def folder(config_from: Callable[[dict], Any], *, model_types: tuple[str, ...] = (),
           expected: str = "",
           view: Optional[Callable[[SafetensorsCheckpoint, str], mapping.Source]] = None) -> Reader:
  """A Reader of a diffusers/transformers model folder: config.json through `config_from`, then
  its safetensors (one file or sharded with an index), seen through `view` where a converter sets
  tensors aside. model_types: the config.json `model_type`s taken (absent reads as the first);
  `expected` says in the error what folder was expected instead. A config the model cannot take is
  reported before any tensor is opened."""

  def read(src: str, variant: Optional[str] = None):
    # SRC is the folder, or one of its .safetensors files (then config.json is beside it).
    raw = read_config(os.path.dirname(src) if os.path.isfile(src) else src)
    try:
      if model_types and raw.get("model_type", model_types[0]) not in model_types:
        raise ValueError(f"model_type {raw['model_type']!r}, expected {model_types[0]!r} "
                         f"({expected})")
      config = config_from(raw)
    except (TypeError, ValueError) as e:
      msg = str(e)   # some readers name the file themselves
      named = msg if msg.startswith("config.json") else f"config.json: {msg}"
      raise ConversionError(src, [named]) from None
    ckpt = SafetensorsCheckpoint(src, variant)
    return (view(ckpt, src) if view else ckpt), config

  return read


def state_dict_file(config_from: Callable[[dict, str], Any], *, expected: str = "") -> Reader:
  """A Reader of one torch.save'd state dict (.pth, read by conversion.torch_io): the config is
  inferred from the tensors' shapes by `config_from(arrays, src)`, which raises ConversionError
  naming what it could not infer; `expected` says in errors what file was expected."""

  def read(src: str, variant: Optional[str] = None):
    if variant is not None:
      raise ValueError(f"--variant {variant!r}: {src} is one state dict file ({expected}), which "
                       "has no variants")
    from conversion.torch_io import read_state_dict
    arrays = read_state_dict(src)
    return mapping.DictSource(arrays), config_from(arrays, src)

  return read


def check_destination(src: str, dst: str) -> None:
  """Before any work: DST may not be SRC, lie inside it or contain it, and must be new, empty or
  an earlier conversion (never a folder of the user's, which the atomic replace would delete)."""
  from sem_repa_jax.models.pretrained import check_replaceable
  s, d = os.path.realpath(src), os.path.realpath(dst)
  inside_src = os.path.isdir(s) and d.startswith(s + os.sep)
  if d == s or inside_src or s.startswith(d + os.sep):
    raise ValueError(f"--dst {dst} is, lies inside or contains --src {src}; write the converted "
                     "folder elsewhere")
  check_replaceable(d)


def convert(src: str, dst: str, dtype: str = "float32", *, kind: str, read: Reader,
            rules: Callable[[Any], list], target_shapes: Callable[[Any], dict],
            module_kwargs: Callable[[Any, str], dict] = standard_kwargs,
            keep_float32: tuple[str, ...] = (), variant: Optional[str] = None) -> str:
  """Converts SRC into DST (config.json + Orbax variables) and returns DST.

  variant: which weights files of a folder to read (e.g. 'fp16' for the *.fp16.safetensors that
  diffusers folders ship beside the float32 ones); None reads those without a variant.
  keep_float32: flat-path prefixes (e.g. 'batch_stats/') that stay float32 whatever `dtype` is.
  Nothing is written unless every check of conversion.mapping passes.
  """
  np_dtype = parse_dtype(dtype)
  check_destination(src, dst)
  source, config = read(src, variant)
  try:
    kwargs = module_kwargs(config, dtype)
    module = build(kind, kwargs)
    flat = mapping.convert(source, rules(config), target_shapes(module),
                           np.float32 if keep_float32 else np_dtype, src_name=src)
  finally:
    if hasattr(source, "close"):
      source.close()
  if keep_float32:
    flat = {k: (v if k.startswith(keep_float32) else v.astype(np_dtype)) for k, v in flat.items()}
  return save_converted(dst, kind=kind, module_kwargs=kwargs, flat_variables=flat,
                        source=os.path.abspath(src))


def video_shapes(module) -> dict:
  """Flat {path: shape} of a video VAE's parameters (a module with `config.in_channels` and
  `config.spatial_compression`), from shapes only: nothing is computed."""
  import jax
  import jax.numpy as jnp
  cfg = module.config
  side = cfg.spatial_compression
  video = jax.ShapeDtypeStruct((1, 1, side, side, cfg.in_channels), jnp.float32)
  return mapping.abstract_shapes(module.init, video)


def convert_arrays(kind: str, source, config, rules: list, target_shapes: Callable,
                   dtype=np.float32, src_name: str = "checkpoint") -> dict:
  """Flat Flax variables of `kind` from a Source of checkpoint tensors, strictly (the part of
  `convert` before casting and saving, for benchmarks and tests)."""
  module = build(kind, standard_kwargs(config, "float32"))
  return mapping.convert(source, rules, target_shapes(module), dtype=dtype, src_name=src_name)

