"""Validation of a resolved job config: errors a user can cause, reported before any work starts."""
import math

import ml_collections

from sem_repa_jax import jobs
from sem_repa_jax.diffusion.schedules import PREDICTION_TYPES


class ConfigError(ValueError):
  """A config value that cannot work; the message names the field and what was expected."""


def _walk(cfg, prefix=""):
  for key, value in cfg.items():
    path = f"{prefix}{key}"
    if isinstance(value, ml_collections.ConfigDict):
      yield from _walk(value, path + ".")
    else:
      yield path, value


def check_mesh_shape(shape, axes, device_count: int) -> tuple[int, ...]:
  """Resolves -1 in `shape` and checks that the mesh covers exactly `device_count` devices."""
  shape = tuple(int(s) for s in shape)
  if len(shape) != len(axes):
    raise ConfigError(f"mesh.shape {shape} has {len(shape)} entries but mesh.axes {tuple(axes)} "
                      f"has {len(axes)}")
  if sum(s == -1 for s in shape) > 1:
    raise ConfigError(f"mesh.shape {shape}: at most one axis may be -1")
  if any(s == 0 or s < -1 for s in shape):
    raise ConfigError(f"mesh.shape {shape}: sizes must be positive (or -1 for the rest)")
  known = math.prod(s for s in shape if s != -1)
  if device_count % known:
    raise ConfigError(f"mesh.shape {shape} (product {known}) does not divide the "
                      f"{device_count} available devices")
  shape = tuple(device_count // known if s == -1 else s for s in shape)
  if math.prod(shape) != device_count:
    raise ConfigError(f"mesh.shape {shape} uses {math.prod(shape)} devices but "
                      f"{device_count} are available")
  return shape


def check_config(config: ml_collections.ConfigDict, device_count: int) -> None:
  if config.job not in jobs.available_jobs():
    raise ConfigError(f"unknown job {config.job!r}; valid jobs: {', '.join(jobs.available_jobs())}")
  for path, value in _walk(config):
    name = path.rsplit(".", 1)[-1]
    if (name.endswith("steps") or name.startswith("num_")) and isinstance(value, (int, float)) \
        and not isinstance(value, bool) and value < 0:
      raise ConfigError(f"config.{path} = {value}: expected a non-negative number")
  prediction = config.get("diffusion", {}).get("prediction_type", None) \
      or config.get("prediction_type", None)
  if prediction is not None and prediction not in PREDICTION_TYPES:
    raise ConfigError(f"prediction_type {prediction!r}: expected one of {', '.join(PREDICTION_TYPES)}")
  if not str(config.workdir):
    raise ConfigError("config.workdir is empty: every job needs a directory to write into")
  check_mesh_shape(config.mesh.shape, config.mesh.axes, device_count)
