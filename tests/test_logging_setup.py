"""Console and log file of a run (sem_repa_jax/logging_setup.py): which records go where, in what
form, and that log lines and progress bars do not break each other."""
import io
import logging
import os
import warnings

import pytest
from absl import logging as absl_logging
from tqdm import tqdm

from sem_repa_jax import logging_setup

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _lines(path):
  with open(path) as f:
    return f.read().splitlines()


def _emit_everything():
  logging.getLogger("orbax.checkpoint.checkpoint_manager").info("orbax info line")
  logging.getLogger("jax._src.xla_bridge").debug("jax debug line")
  logging.getLogger("sem_repa_jax.jobs.demo").info("project info line")
  logging.getLogger("data_pipelines.annotate").info("annotation info line")
  logging.getLogger("jax._src.xla_bridge").warning("jax warning line")
  absl_logging.info("absl info from a test module")        # origin: tests.test_logging_setup
  metrics = logging.getLogger("sem_repa_jax.training.metrics")
  metrics.info("file-only line", extra=logging_setup.FILE_ONLY)
  with logging_setup.file_only():
    metrics.info("quiet metric line")
  with logging_setup.file_only(False):
    metrics.info("loud metric line")
  with warnings.catch_warnings():
    warnings.simplefilter("always")
    warnings.warn("python warning line", UserWarning)


def test_console_keeps_project_lines_and_warnings_file_keeps_everything(tmp_path):
  console = io.StringIO()
  before = list(logging.getLogger().handlers)
  with logging_setup.setup(str(tmp_path), 0, console_stream=console) as log:
    assert log.path == str(tmp_path / "log.txt")
    _emit_everything()
  out = console.getvalue()
  for shown in ("project info line", "annotation info line", "jax warning line",
                "python warning line", "loud metric line"):
    assert shown in out
  for hidden in ("orbax info line", "jax debug line", "absl info from a test module",
                 "file-only line", "quiet metric line", "log opened"):
    assert hidden not in out
  assert "WARNING jax._src.xla_bridge: jax warning line" in out

  lines = _lines(tmp_path / "log.txt")
  text = "\n".join(lines)
  for written in ("orbax info line", "project info line", "jax warning line", "file-only line",
                  "quiet metric line", "python warning line", "log opened by process 0"):
    assert written in text
  orbax = next(l for l in lines if "orbax info line" in l)
  assert " INFO p0 orbax.checkpoint.checkpoint_manager:" in orbax
  assert " INFO p0 tests.test_logging_setup:" in next(l for l in lines if "absl info" in l)
  assert " WARNING p0 py.warnings:" in next(l for l in lines if "python warning line" in l)
  # Root's levels pass INFO, not DEBUG, unless absl's --verbosity asks for it.
  assert "jax debug line" not in text
  assert logging.getLogger().handlers == before   # closed and put back

  with logging_setup.setup(str(tmp_path), 0, console_stream=io.StringIO()):
    logging.getLogger("sem_repa_jax.jobs.demo").info("second run")
  again = _lines(tmp_path / "log.txt")
  assert again[:len(lines)] == lines and "second run" in again[-1]   # appended, not rewritten
  assert sum("log opened" in l for l in again) == 2


def test_other_processes_write_their_own_file_and_nothing_to_the_console(tmp_path):
  console = io.StringIO()
  with logging_setup.setup(str(tmp_path), 3, console_stream=console) as log:
    assert log.path == logging_setup.log_path(str(tmp_path), 3) == str(tmp_path / "log.3.txt")
    _emit_everything()
  assert console.getvalue() == ""
  assert not os.path.exists(tmp_path / "log.txt")
  lines = _lines(tmp_path / "log.3.txt")
  assert any(" WARNING p3 jax._src.xla_bridge:" in l and "jax warning line" in l for l in lines)
  assert all(" p3 " in l for l in lines if l[:4].isdigit())


def test_an_exception_leaving_the_run_is_written_to_the_file_only(tmp_path):
  console = io.StringIO()
  with pytest.raises(RuntimeError):
    with logging_setup.setup(str(tmp_path), 0, console_stream=console):
      raise RuntimeError("the job broke")
  assert console.getvalue() == ""
  text = open(tmp_path / "log.txt").read()
  assert "run ended by RuntimeError: the job broke" in text and "Traceback" in text


def test_a_log_line_clears_the_open_bar_and_the_bar_is_redrawn(tmp_path):
  stream = io.StringIO()
  with logging_setup.setup(str(tmp_path), 0, console_stream=stream):
    with tqdm(total=10, desc="align", file=stream, mininterval=0, ascii=True) as bar:
      bar.update(4)
      logging.getLogger("sem_repa_jax.training.loop").info("compiled in 1.0 s")
      bar.update(1)
  # Each console line is what it says: the bar was erased (\r) before the message, and the
  # message's line holds nothing of the bar; the bar comes back after it.
  raw = stream.getvalue()
  line = next(l for l in raw.split("\n") if "compiled in 1.0 s" in l)
  assert line.split("\r")[-1].endswith(" compiled in 1.0 s")
  assert "align" not in line.split("\r")[-1]
  after = raw.split("compiled in 1.0 s\n", 1)[1]
  assert "align:" in after and "5/10" in after


def test_module_of_names_a_project_file_by_its_package():
  path = os.path.join(ROOT, "sem_repa_jax", "training", "loop.py")
  assert logging_setup.module_of(path) == "sem_repa_jax.training.loop"
  assert logging_setup.module_of(os.path.join(ROOT, "data_pipelines", "__init__.py")) == \
      "data_pipelines"
  assert logging_setup.is_project("conversion.t5_encoder")
  assert not logging_setup.is_project("orbax.checkpoint")


def test_records_before_setup_are_held_for_the_file_and_warnings_shown_at_once(tmp_path):
  before = list(logging.getLogger().handlers)
  console = io.StringIO()
  logging_setup.hold(console_stream=console)
  logging_setup.hold(console_stream=console)          # a second call changes nothing
  logging.getLogger("jax._src.xla_bridge").info("Unable to initialize backend 'tpu'")
  logging.getLogger("jax._src.xla_bridge").warning("early warning line")
  assert "early warning line" in console.getvalue()   # not held back until setup
  assert "backend 'tpu'" not in console.getvalue()
  with logging_setup.setup(str(tmp_path), 0, console_stream=console):
    logging.getLogger("sem_repa_jax.jobs.demo").info("after setup")
  text = (tmp_path / "log.txt").read_text()
  assert text.index("backend 'tpu'") < text.index("early warning line") < text.index("after setup")
  assert "backend 'tpu'" not in console.getvalue()
  assert console.getvalue().count("early warning line") == 1
  assert logging.getLogger().handlers == before       # what hold() took off is back
