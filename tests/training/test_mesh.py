import jax
import pytest

from sem_repa_jax.config_checks import ConfigError
from sem_repa_jax.training import mesh as mesh_lib
from tests.training import toy


def test_mesh_from_config():
  m = mesh_lib.make_mesh(toy.config((2, -1, 1)))
  assert m.axis_names == ("data", "fsdp", "tensor") and dict(m.shape) == {"data": 2, "fsdp": 4,
                                                                          "tensor": 1}
  assert sorted(d.id for d in m.devices.flat) == sorted(d.id for d in jax.devices())
  with pytest.raises(ConfigError, match="does not divide the 8"):
    mesh_lib.make_mesh(toy.config((3, -1, 1)))


def test_multislice_shape_is_checked():
  cfg = toy.config((2, 4, 1))
  cfg.mesh.dcn_shape = (2, 1, 1)
  with pytest.raises(ConfigError, match="covers 2 slices but the devices span 1"):
    mesh_lib.make_mesh(cfg)
  cfg.mesh.dcn_shape = (3, 1)
  with pytest.raises(ConfigError, match="one entry per axis"):
    mesh_lib.make_mesh(cfg)


def test_distributed_init_is_opt_in():
  mesh_lib.initialize_distributed(toy.config())     # initialize=False: nothing happens
  assert jax.process_count() == 1


def test_distributed_fields_reach_jax(monkeypatch):
  seen = {}
  monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: seen.update(kw))
  cfg = toy.config()
  cfg.distributed.initialize = True
  cfg.distributed.num_processes = 4
  cfg.distributed.local_device_ids = (0, 1, 2, 3, 4, 5, 6, 7)
  mesh_lib.initialize_distributed(cfg)
  # Unset fields are left for JAX to discover (SLURM, Cloud TPU).
  assert seen == {"num_processes": 4, "local_device_ids": [0, 1, 2, 3, 4, 5, 6, 7]}
