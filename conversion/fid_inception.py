"""FID's InceptionV3 from pytorch-fid's weights file (pt_inception-2015-12-05-6726825d.pth, the
2015 TensorFlow graph as pytorch-fid ports it) into sem_repa_jax.models.metrics.inception.

Names are torchvision's Inception3 module names, so the Rules only move `.` to `/` and put the
BatchNorm statistics in batch_stats. The 1008-way `fc` is set aside (FID reads the pool
features). A file with a 1000-way fc or AuxLogits is torchvision's ImageNet InceptionV3, whose
features give other FID values: refused with that said.
"""
import numpy as np

from conversion import driver, mapping
from conversion.mapping import ConversionError, DictSource, Rule

from sem_repa_jax.models.registry import factory_of

KIND = "fid-inception"
FACTORY = factory_of(KIND)
HELP = "FID InceptionV3 from pytorch-fid's pt_inception-2015-12-05-6726825d.pth"
FC_CLASSES = 1008


def _basic_conv_rules(src: str, dst: str) -> list:
  return [Rule(src + r"\.conv\.weight", f"params/{dst}/conv/kernel", mapping.conv2d),
          Rule(src + r"\.bn\.weight", f"params/{dst}/bn/scale"),
          Rule(src + r"\.bn\.bias", f"params/{dst}/bn/bias"),
          Rule(src + r"\.bn\.running_mean", f"batch_stats/{dst}/bn/mean"),
          Rule(src + r"\.bn\.running_var", f"batch_stats/{dst}/bn/var")]


RULES = (_basic_conv_rules(r"(Conv2d_\w+)", r"\1")
         + _basic_conv_rules(r"(Mixed_\w+)\.(branch\w+)", r"\1/\2"))


def read_arrays(src: str) -> dict:
  """The network's tensors of a pytorch-fid Inception .pth (fc and BN step counters removed)."""
  from conversion.torch_io import read_state_dict
  sd = read_state_dict(src)
  fc = sd.get("fc.weight")
  aux = [k for k in sd if k.startswith("AuxLogits.")]
  if fc is None or fc.shape[0] != FC_CLASSES or aux:
    got = "no fc.weight" if fc is None else f"fc.weight {fc.shape}"
    raise ConversionError(src, [f"{got}{' and AuxLogits' if aux else ''}: not pytorch-fid's FID "
                                f"Inception (fc of {FC_CLASSES} classes, no AuxLogits); "
                                "torchvision's ImageNet InceptionV3 gives different FID features"])
  return {k: v for k, v in sd.items()
          if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}


def _read(src: str, variant=None):
  if variant is not None:
    raise ValueError(f"--variant {variant!r}: the Inception .pth has no variants")
  return DictSource(read_arrays(src)), None


def target_shapes(module) -> dict:
  import jax
  import jax.numpy as jnp
  return mapping.abstract_shapes(module.init, jax.ShapeDtypeStruct((1, 75, 75, 3), jnp.float32))


def convert_arrays(arrays: dict, input_size: int = 299, src: str = "checkpoint") -> dict:
  """Flat {'params/...', 'batch_stats/...'} of FIDInceptionV3 from pytorch-fid names (strict)."""
  from sem_repa_jax.models.metrics.inception import FIDInceptionV3
  return mapping.convert(DictSource(arrays), RULES, target_shapes(FIDInceptionV3(input_size)),
                         np.float32, src_name=src)


def convert(src: str, dst: str, dtype: str = "float32", variant=None) -> str:
  # Running statistics stay float32, as for every BatchNorm network here.
  return driver.convert(src, dst, dtype, kind=KIND, read=_read, rules=lambda config: RULES,
                        target_shapes=target_shapes,
                        module_kwargs=lambda config, dt: dict(input_size=299, dtype=dt,
                                                              param_dtype=dt),
                        keep_float32=("batch_stats/",), variant=variant)
