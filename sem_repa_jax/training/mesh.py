"""The device mesh: named axes from the config, and multi-host start-up.

`initialize_distributed(config)` must run before anything touches a device: on a cluster every
process has to join the coordinator before `jax.devices()` can list the devices of all hosts.
"""
import jax
import numpy as np
from absl import logging
from jax.experimental import mesh_utils
from jax.sharding import Mesh

from sem_repa_jax.config_checks import ConfigError, check_mesh_shape


def initialize_distributed(config) -> None:
  """Joins the multi-host runtime when `config.distributed.initialize` is set.

  Empty/zero/negative fields are left to JAX, which discovers them on Cloud TPU and under SLURM
  (elsewhere the coordinator may also come from JAX_COORDINATOR_ADDRESS). Under SLURM, JAX gives
  each process the one GPU numbered SLURM_LOCALID unless `local_device_ids` names them: with one
  process per host, set it to every GPU of the host (docs/training.md).
  """
  d = config.get("distributed")
  if d is None or not d.initialize:
    return
  kwargs = {}
  if d.coordinator_address:
    kwargs["coordinator_address"] = d.coordinator_address
  if d.num_processes > 0:
    kwargs["num_processes"] = d.num_processes
  if d.process_id >= 0:
    kwargs["process_id"] = d.process_id
  if d.get("local_device_ids"):
    kwargs["local_device_ids"] = [int(i) for i in d.local_device_ids]
  jax.distributed.initialize(**kwargs)
  logging.info("process %d of %d, %d local / %d global devices", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())


def _slice_count(devices) -> int:
  return len({getattr(d, "slice_index", 0) for d in devices})


def make_mesh(config, devices=None) -> Mesh:
  """A Mesh with `config.mesh.axes`, shaped by `config.mesh.shape` (one -1 takes the rest).

  On several TPU slices (or GPU hosts joined by a slower network), `config.mesh.dcn_shape` (same
  length as the axes, product = number of slices) says which axes cross the slow links; the
  per-slice part is then `shape / dcn_shape`. Without it, devices are laid out by
  `create_device_mesh`, which orders them so that neighbouring mesh positions share fast links.
  """
  devices = list(jax.devices() if devices is None else devices)
  axes = tuple(config.mesh.axes)
  shape = check_mesh_shape(config.mesh.shape, axes, len(devices))
  dcn_shape = tuple(config.mesh.get("dcn_shape", ()) or ())
  if dcn_shape:
    dcn_shape = tuple(int(s) for s in dcn_shape)
    if len(dcn_shape) != len(axes) or any(s % d for s, d in zip(shape, dcn_shape)):
      raise ConfigError(f"mesh.dcn_shape {dcn_shape} must have one entry per axis {axes} and "
                        f"divide mesh.shape {shape}")
    if int(np.prod(dcn_shape)) != _slice_count(devices):
      raise ConfigError(f"mesh.dcn_shape {dcn_shape} covers {int(np.prod(dcn_shape))} slices but "
                        f"the devices span {_slice_count(devices)}")
    ici_shape = tuple(s // d for s, d in zip(shape, dcn_shape))
    grid = mesh_utils.create_hybrid_device_mesh(ici_shape, dcn_shape, devices)
  else:
    # allow_split_physical_axes lets e.g. a (2, 4) mesh live on a 2x2x2 TPU slice.
    grid = mesh_utils.create_device_mesh(shape, devices, allow_split_physical_axes=True)
  return Mesh(grid, axes)
