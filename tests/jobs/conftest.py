"""Synthetic annotation records and a stage-1 export, shared by the SemanticREPA job tests (one of
each per test session: annotation and stage 1 are the slow parts)."""
import os
import pathlib

import pytest

from configs import annotate as annotate_config
from sem_repa_jax.jobs import align, annotate
from tests.jobs.semrepa_setup import training_config


@pytest.fixture(scope="session")
def records(tmp_path_factory):
  root = tmp_path_factory.mktemp("semrepa")
  c = annotate_config.get_config()
  c.workdir = str(root / "ann")
  c.data.root = str(root / "syn")
  c.data.synthetic_clips, c.data.num_frames = 4, 5
  c.data.height = c.data.synthetic_height = 32
  c.data.width = c.data.synthetic_width = 48
  c.progress_bar = False
  annotate.run(c)
  return os.path.join(c.workdir, "annotations", "records")


@pytest.fixture(scope="session")
def stage1(records, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("align")
  align.run(training_config(records, workdir, "align", 12))
  return str(workdir)


def pytest_collection_modifyitems(items):
  """Every job test is `slow` (pytest.ini): `-m "not slow"` leaves them out of a quick loop."""
  here = pathlib.Path(__file__).parent
  for item in items:
    if here in item.path.parents:
      item.add_marker(pytest.mark.slow)
