"""Validation of a resolved job config: errors a user can cause, reported before any work starts."""

import json
import os

import ml_collections

from sem_repa_jax import jobs
from sem_repa_jax.diffusion.parameterization import PREDICTION_TYPES
from sem_repa_jax.diffusion.schedules import SPACINGS
from sem_repa_jax.training.mesh import ConfigError, check_mesh_shape  # noqa: F401 (re-exported)

DTYPES = ("float32", "bfloat16", "float16")


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
  for field in ("dtype", "param_dtype"):
    if config.get(field) is not None and config[field] not in DTYPES:
      raise ConfigError(f"config.{field} = {config[field]!r}: expected one of {', '.join(DTYPES)}")
  ckpt = config.get("checkpoint")
  if ckpt is not None and ckpt.get("keep", 1) < 1:
    raise ConfigError(f"config.checkpoint.keep = {ckpt.keep}: expected at least 1 (the last "
                      "checkpoint is the run's result; 0 would delete it)")
  for stage, jobs_of_stage in (("align", ("align", "demo")), ("finetune", ("finetune", "demo"))):
    if config.job in jobs_of_stage and config.get(stage) is not None \
        and config[stage].get("num_steps", 1) < 1:
      raise ConfigError(f"config.{stage}.num_steps = {config[stage].num_steps}: expected at least "
                        "1 (0 would export untrained modules as if trained)")
  data = config.get("data")
  if data is not None and data.get("batch_size") is not None and data.batch_size < 1:
    raise ConfigError(f"config.data.batch_size = {data.batch_size}: expected at least 1")
  if config.job == "sample":
    check_sample(config)
  check_mesh_shape(config.mesh.shape, config.mesh.axes, device_count)
  check_workdir_is_this_jobs(config)


def check_sample(config) -> None:
  """The `sample` job's pipeline name and the SVD sampler fields (configs/sample_svd.py,
  configs/sample_stableanimator.py, configs/sample_vividpose.py), checked before any model folder
  is read."""
  from sem_repa_jax.jobs.sample import PIPELINES
  pipeline = config.get("pipeline", "cogvideox_i2v")
  if pipeline not in PIPELINES:
    raise ConfigError(f"config.pipeline = {pipeline!r}: expected one of {', '.join(PIPELINES)}")
  if pipeline not in ("svd_i2v", "stableanimator", "vividpose"):
    return
  if config.decode_chunk_size < 0:
    raise ConfigError(f"config.decode_chunk_size = {config.decode_chunk_size}: expected 0 (all "
                      "frames at once) or a positive number of frames")
  if config.timestep_spacing not in SPACINGS:
    raise ConfigError(f"config.timestep_spacing = {config.timestep_spacing!r}: expected one of "
                      f"{', '.join(SPACINGS)}")
  if not 0 < config.sigma_min < config.sigma_max:
    raise ConfigError(f"config.sigma_min = {config.sigma_min}, config.sigma_max = "
                      f"{config.sigma_max}: expected 0 < sigma_min < sigma_max")


def check_workdir_is_this_jobs(config) -> None:
  """A workdir that holds another job's run (its config.json names another job, and it has
  checkpoints) is not reused: its checkpoints would not fit this job's state, and its config.json
  would be overwritten."""
  path = os.path.join(str(config.workdir), "config.json")
  if not os.path.isfile(path) or not os.path.isdir(os.path.join(str(config.workdir), "checkpoints")):
    return
  try:
    with open(path) as f:
      previous = json.load(f).get("job")
  except (OSError, ValueError):
    return
  if previous and previous != config.job:
    raise ConfigError(f"config.workdir {config.workdir} holds a run of job {previous!r} "
                      f"(its config.json and checkpoints/); give job {config.job!r} its own workdir")
