"""The device mesh: named axes from the config, and multi-host start-up.

`initialize_distributed(config)` must run before anything touches a device: on a cluster every
process has to join the coordinator before `jax.devices()` can list the devices of all hosts.
"""
import math

import jax
import numpy as np
from absl import logging
from jax.experimental import mesh_utils
from jax.sharding import Mesh


class ConfigError(ValueError):
  """A config value that cannot work; the message names the field and what was expected."""


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
