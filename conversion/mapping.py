"""Declarative, strict key mapping from a PyTorch/ONNX checkpoint to a Flax parameter tree.

A converter is a list of `Rule`s: a regular expression over source names, a target path template
("params/blocks/attn/to_q/kernel", groups as \\1 or \\g<name>), and a transform of the array. Rules
with `stack` put the captured layer index on axis 0 of the target, which is how layers stacked with
nn.scan are filled. `convert` checks everything before reading any data and reports all problems at
once: source names no rule uses, target parameters nothing fills, layers missing from a stack, and
shapes that do not match after the transform.
"""
import re
from dataclasses import dataclass
from typing import Callable, Mapping, Optional, Protocol

import numpy as np


class ConversionError(ValueError):
  """Every problem found while matching a checkpoint to a target tree, listed together."""

  def __init__(self, src: str, problems: list[str]):
    self.problems = problems
    shown = problems[:60]
    more = f"\n  ... and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
    super().__init__(f"{src}: {len(problems)} problem(s) converting the checkpoint:\n  "
                     + "\n  ".join(shown) + more)


class Source(Protocol):
  """What `convert` reads: names, shapes without loading, and arrays on demand."""

  def keys(self): ...
  def shape(self, name: str) -> tuple: ...
  def get(self, name: str) -> np.ndarray: ...


class DictSource:
  """A Source over an in-memory dict of arrays (e.g. a torch state dict turned to numpy)."""

  def __init__(self, arrays: Mapping[str, np.ndarray]):
    self.arrays = dict(arrays)

  def keys(self):
    return self.arrays.keys()

  def shape(self, name):
    return tuple(np.shape(self.arrays[name]))

  def get(self, name):
    return np.asarray(self.arrays[name])


class SubsetSource:
  """A Source showing only `names` of another (tensors a converter has checked and set aside)."""

  def __init__(self, source, names):
    self.source, self.names = source, list(names)

  def keys(self):
    return self.names

  def shape(self, name):
    return self.source.shape(name)

  def get(self, name):
    return self.source.get(name)

  def close(self):
    if hasattr(self.source, "close"):
      self.source.close()


# Transforms from PyTorch layouts to Flax layouts.
def split_axis(x, axis: int, parts: tuple):
  """Splits one axis of x into `parts` (e.g. heads*head_dim -> heads, head_dim) when the size
  agrees; otherwise returns x unchanged so that the converter's shape check reports it."""
  axis = axis % x.ndim
  if x.shape[axis] != int(np.prod(parts)):
    return x
  return x.reshape(x.shape[:axis] + tuple(parts) + x.shape[axis + 1:])


def identity(x):
  return x


def linear(x):
  """nn.Linear weight (out, in) -> Dense kernel (in, out)."""
  return x.T


def conv2d(x):
  """Conv2d weight OIHW -> HWIO."""
  return x.transpose(2, 3, 1, 0)


def conv3d(x):
  """Conv3d weight OIDHW -> DHWIO."""
  return x.transpose(2, 3, 4, 1, 0)


def conv3d_over_frames(x):
  """Conv3d weight (O, I, k, 1, 1), a convolution over frames only -> (k, I, O); another shape
  passes through unchanged, for the shape check to report."""
  if x.ndim != 5 or x.shape[3:] != (1, 1):
    return x
  return x[:, :, :, 0, 0].transpose(2, 1, 0)


def conv1d(x):
  """Conv1d weight OIW -> WIO."""
  return x.transpose(2, 1, 0)


@dataclass(frozen=True)
class Rule:
  source: str
  target: str
  transform: Callable[[np.ndarray], np.ndarray] = identity
  stack: Optional[int | str] = None   # group (number or name) holding the layer index; stacked on axis 0


def flatten(tree, prefix="") -> dict:
  """{'params': {'a': {'kernel': x}}} -> {'params/a/kernel': x}."""
  out = {}
  for k, v in tree.items():
    path = f"{prefix}/{k}" if prefix else str(k)
    if isinstance(v, Mapping):
      out.update(flatten(v, path))
    else:
      out[path] = v
  return out


def unflatten(flat: Mapping) -> dict:
  tree: dict = {}
  for path, v in flat.items():
    node = tree
    *parents, leaf = path.split("/")
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = v
  return tree


def abstract_shapes(init_fn, *args, **kwargs) -> dict:
  """Flat {path: shape} of the variables `init_fn(key, *args, **kwargs)` creates (e.g. module.init),
  found with jax.eval_shape: nothing is allocated. This is the `target` of `plan` and `convert`."""
  import flax.linen as nn
  import jax
  tree = jax.eval_shape(lambda key, a, kw: init_fn(key, *a, **kw), jax.random.key(0), args, kwargs)
  return {k: tuple(v.shape) for k, v in flatten(nn.meta.unbox(tree)).items()}


def _shape_after(transform, shape, dtype):
  # A zero-strided stand-in: transposes and reshapes of it cost no memory.
  dummy = np.broadcast_to(np.zeros((), dtype), shape)
  return tuple(np.shape(transform(dummy)))


@dataclass
class _Slot:
  entries: list   # (layer index or None, source name, transform)


def plan(source: Source, rules: list[Rule], target: Mapping[str, tuple], src_name: str = "checkpoint"):
  """Matches every source name to a target; returns {target path: _Slot} or raises ConversionError.

  target: flat {path: shape} of the Flax parameters to fill.
  """
  compiled = [(re.compile(r.source), r) for r in rules]
  problems, slots = [], {}
  for name in sorted(source.keys()):
    for pattern, rule in compiled:
      m = pattern.fullmatch(name)
      if m is None:
        continue
      path = m.expand(rule.target)
      index = None
      if rule.stack is not None:
        group = int(rule.stack) if str(rule.stack).isdigit() else rule.stack
        index = int(m.group(group))
      slots.setdefault(path, _Slot([])).entries.append((index, name, rule.transform))
      break
    else:
      problems.append(f"unused source tensor {name!r} {source.shape(name)}: no rule maps it")
  for path, slot in sorted(slots.items()):
    if path not in target:
      names = ", ".join(repr(e[1]) for e in slot.entries[:3])
      problems.append(f"source {names} maps to {path!r}, which the model does not have")
      continue
    want = tuple(target[path])
    indices = [e[0] for e in slot.entries]
    if indices[0] is None:
      if len(slot.entries) > 1:
        problems.append(f"target {path!r} is filled by several sources: "
                        f"{[e[1] for e in slot.entries]}")
        continue
      per_layer_want = want
    else:
      layers = want[0] if want else 0
      if sorted(indices) != list(range(layers)):
        missing = sorted(set(range(layers)) - set(indices))
        extra = sorted(set(indices) - set(range(layers)))
        dup = sorted({i for i in indices if indices.count(i) > 1})
        problems.append(f"stacked target {path!r} expects layers 0..{layers - 1}: "
                        f"missing {missing}, unexpected {extra}, duplicated {dup}")
        continue
      per_layer_want = want[1:]
    for _, name, transform in slot.entries:
      try:
        got = _shape_after(transform, source.shape(name), np.float32)
      except (ValueError, IndexError, TypeError) as e:
        problems.append(f"source {name!r} {source.shape(name)} cannot be transformed for "
                        f"{path!r} {per_layer_want}: {e}")
        continue
      if got != per_layer_want:
        problems.append(f"shape mismatch: source {name!r} {source.shape(name)} -> {got} after "
                        f"transform, but {path!r} expects {per_layer_want}")
  for path in sorted(set(target) - set(slots)):
    problems.append(f"missing: model parameter {path!r} {tuple(target[path])} is not in the checkpoint")
  if problems:
    raise ConversionError(src_name, problems)
  return slots


def convert(source: Source, rules: list[Rule], target: Mapping[str, tuple], dtype=np.float32,
            src_name: str = "checkpoint", progress=None) -> dict:
  """Returns the flat {path: np.ndarray} of the target, all checks passed first.

  Each target array is allocated once in its final dtype and filled in place, so host memory holds
  the final arrays plus one source tensor's transformed copy at a time (sources are memory-mapped).
  """
  slots = plan(source, rules, target, src_name)
  out = {}
  items = sorted(slots.items())
  if progress is not None:
    items = progress(items)
  for path, slot in items:
    entries = slot.entries
    if entries[0][0] is None:
      _, name, transform = entries[0]
      out[path] = np.asarray(transform(source.get(name)), dtype=dtype)
    else:
      arr = np.empty(tuple(target[path]), dtype=dtype)
      for index, name, transform in entries:
        arr[index] = transform(source.get(name))
      out[path] = arr
  return out
