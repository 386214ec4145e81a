import os
import subprocess
import sys

import pytest

from sem_repa_jax import config_checks, jobs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bogus_job_exits_nonzero_listing_jobs(tmp_path):
  r = subprocess.run([sys.executable, "-m", "sem_repa_jax.main", "--config", "configs/base.py",
                      "--config.job=bogus", f"--config.workdir={tmp_path}"],
                     cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert r.returncode != 0
  assert "unknown job 'bogus'" in r.stderr
  for name in jobs.available_jobs():
    assert name in r.stderr


@pytest.mark.parametrize("shape,devices,expected", [((-1, 1, 1), 8, (8, 1, 1)),
                                                    ((2, -1, 2), 8, (2, 2, 2)),
                                                    ((1, 8, 1), 8, (1, 8, 1))])
def test_mesh_shape_resolves(shape, devices, expected):
  assert config_checks.check_mesh_shape(shape, ("data", "fsdp", "tensor"), devices) == expected


@pytest.mark.parametrize("shape,msg", [((3, -1, 1), "does not divide"), ((2, 2, 1), "uses 4 devices"),
                                       ((-1, -1, 1), "at most one"), ((2, 2), "has 2 entries")])
def test_bad_mesh_shapes_are_explained(shape, msg):
  with pytest.raises(config_checks.ConfigError, match=msg):
    config_checks.check_mesh_shape(shape, ("data", "fsdp", "tensor"), 8)
