"""The parity harness of the model tests: a torch reference, saved as users download it, converted.

A model test builds its PyTorch reference (diffusers, transformers or a local insightface copy),
`randomize`s it so that no weight sits at an init value that would hide a mapping mistake, saves it
in the user's format (`save_pretrained` folders, possibly sharded with an index; `write_folder` for
edited state dicts; .pth and .onnx files), converts it with `convert` (the `python -m conversion`
entry point, in process), loads the result with `load_pretrained` and compares with its tolerance.
`edited_copy` + `conversion_error` are the scaffold of the tests that corrupt a checkpoint and read
the error; `ShapeSource` checks the mapping of a full-size model built on the meta device;
`lower_on_mesh` lowers a model under logical sharding rules on a 2 x 2 x 2 mesh.
"""
import contextlib
import io
import json
import os
import shutil

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

from conversion import available_kinds
from conversion.__main__ import main as conversion_main
from conversion.mapping import ConversionError


def randomize(model: torch.nn.Module, seed: int = 0, *, norms_only: bool = False,
              spread: float = 0.2, gain: float = 1.0, buffers: dict | None = None):
  """Redraws the parameters of `model` in place from a generator seeded with `seed`; returns it.

  Parameters of norm modules (class name containing 'Norm': LayerNorm, GroupNorm, BatchNorm,
  T5LayerNorm, ...) become 1 + spread * r (scales) or spread * r (shifts), their running means
  spread * r and their running variances exp(spread * r). With norms_only those are all that
  change (the default init is random elsewhere); otherwise 1-D parameters become spread * r and
  the others gain * r / sqrt(fan_in). buffers: {name: std} of further buffers drawn as std * r
  (e.g. a learned positional table). r ~ N(0, 1), drawn in named_parameters order, then buffers.
  """
  g = torch.Generator().manual_seed(seed)
  draw = lambda t: torch.randn(t.shape, generator=g)
  owners = {f"{m_name}.{n}" if m_name else n: m for m_name, m in model.named_modules()
            for n, _ in [*m.named_parameters(recurse=False), *m.named_buffers(recurse=False)]}
  is_norm = lambda name: "Norm" in type(owners[name]).__name__
  with torch.no_grad():
    for name, p in model.named_parameters():
      leaf = name.rsplit(".", 1)[-1]
      if is_norm(name):
        p.copy_((1.0 if leaf == "weight" else 0.0) + spread * draw(p))
      elif norms_only:
        continue
      elif p.ndim <= 1:
        p.copy_(spread * draw(p))
      else:
        p.copy_(gain * draw(p) / np.sqrt(np.prod(p.shape[1:])))
    for name, b in model.named_buffers():
      leaf = name.rsplit(".", 1)[-1]
      if is_norm(name) and leaf == "running_mean":
        b.copy_(spread * draw(b))
      elif is_norm(name) and leaf == "running_var":
        b.copy_(torch.exp(spread * draw(b)))
      elif buffers and name in buffers:
        b.copy_(buffers[name] * draw(b))
  return model


def convert(kind: str, src, dst, dtype: str = "float32", variant: str | None = None,
            config=None) -> str:
  """`python -m conversion KIND --src SRC --dst DST --dtype DTYPE [--variant V] [--config C]`, in
  this process; returns DST."""
  err = io.StringIO()
  extra = (["--variant", variant] if variant else []) + (["--config", str(config)] if config
                                                          else [])
  with contextlib.redirect_stderr(err):
    rc = conversion_main([kind, "--src", str(src), "--dst", str(dst), "--dtype", dtype] + extra)
  assert rc == 0, f"python -m conversion {kind} --src {src} failed: {err.getvalue()}"
  return str(dst)


def convert_pretrained(model, kind: str, src, dst, dtype: str = "float32", **save_kwargs) -> str:
  """model.save_pretrained(SRC, **save_kwargs) (e.g. max_shard_size='30KB' for a sharded folder
  with its index), converted into DST; returns DST."""
  model.save_pretrained(str(src), **save_kwargs)
  return convert(kind, src, dst, dtype)


def round_trip(model, kind: str, root, **save_kwargs) -> tuple[str, str]:
  """(src, dst): `model` saved under ROOT/src and converted into ROOT/dst (convert_pretrained)."""
  src, dst = os.path.join(str(root), "src"), os.path.join(str(root), "dst")
  return src, convert_pretrained(model, kind, src, dst, **save_kwargs)


def read_folder(src) -> dict:
  """{name: array} of every tensor in the *.safetensors files of a model folder."""
  state = {}
  for f in sorted(os.listdir(src)):
    if f.endswith(".safetensors"):
      state.update(load_file(os.path.join(src, f)))
  return state


def write_folder(state: dict, dst, *, config_from, shards: int = 1) -> str:
  """A model folder holding `state` ({name: array}) and the config.json of `config_from`: one
  model.safetensors, or `shards` files with the model.safetensors.index.json that maps them."""
  os.makedirs(dst, exist_ok=True)
  shutil.copy(os.path.join(str(config_from), "config.json"), dst)
  # ascontiguousarray makes 0-d arrays 1-d; a scalar (CLIP's logit_scale) keeps its shape.
  state = {k: np.ascontiguousarray(v).reshape(np.shape(v)) for k, v in state.items()}
  if shards == 1:
    save_file(state, os.path.join(str(dst), "model.safetensors"))
    return str(dst)
  files = {}
  for i, names in enumerate(np.array_split(sorted(state), shards)):
    fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
    save_file({k: state[k] for k in names}, os.path.join(str(dst), fname))
    files.update({k: fname for k in names})
  with open(os.path.join(str(dst), "model.safetensors.index.json"), "w") as f:
    json.dump({"weight_map": files}, f)
  return str(dst)


def edited_copy(src, dst, edit) -> str:
  """DST: the folder SRC with edit(state) applied to its tensors (a corrupted checkpoint)."""
  state = read_folder(src)
  edit(state)
  return write_folder(state, dst, config_from=src)


def conversion_error(kind: str, src, dst, error=ConversionError, match: str | None = None):
  """The `error` converting SRC as KIND raises (what the CLI prints), its message searched for
  the regular expression `match` as pytest.raises does; DST must not be written."""
  with pytest.raises(error, match=match) as e:
    available_kinds()[kind].convert(str(src), str(dst))
  assert not os.path.exists(dst), f"{dst} was written by a failed conversion"
  return e.value


class ShapeSource:
  """A conversion Source of a torch model's state dict as names and shapes only (meta tensors
  work: nothing is allocated), for mapping-coverage checks with conversion.mapping.plan."""

  def __init__(self, model: torch.nn.Module):
    self.shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}

  def keys(self):
    return self.shapes.keys()

  def shape(self, name):
    return self.shapes[name]


def max_abs_error(got, want) -> float:
  return float(np.abs(np.asarray(got, np.float32) - np.asarray(want, np.float32)).max())


def lower_on_mesh(module, variables, args, rules) -> tuple:
  """(parameter shardings, HLO text) of `module.apply(variables, *args)` lowered (not compiled)
  on a ('data', 'fsdp', 'tensor') = 2 x 2 x 2 mesh of the first 8 devices under logical `rules`:
  lowering checks that every activation constraint has the rank its names say."""
  import flax.linen as nn
  import jax
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:8]).reshape(2, 2, 2), ("data", "fsdp", "tensor"))
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):   # `with mesh:` drops the constraints
    abstract = jax.eval_shape(module.init, jax.random.key(0), *args)
    shardings = nn.logical_to_mesh_sharding(nn.get_partition_spec(abstract), mesh, rules)
    sharded = jax.tree_util.tree_map(
        lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh), variables, shardings)
    return shardings, jax.jit(module.apply).lower(sharded, *args).as_text()
