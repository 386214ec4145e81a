"""Validation of a resolved job config: errors a user can cause, reported before any work starts."""

import ml_collections

from sem_repa_jax import jobs
from sem_repa_jax.diffusion.parameterization import PREDICTION_TYPES
from sem_repa_jax.training.mesh import ConfigError, check_mesh_shape  # noqa: F401 (re-exported)


def _walk(cfg, prefix=""):
  for key, value in cfg.items():
    path = f"{prefix}{key}"
    if isinstance(value, ml_collections.ConfigDict):
      yield from _walk(value, path + ".")
    else:
      yield path, value


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
