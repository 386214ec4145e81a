"""Where log records go during a run: a quiet console and a complete `<workdir>/log.txt`.

`hold()` is called by main.py at start-up, `setup(workdir, process_index)` once the workdir and the
process index are known; the `RunLog` it returns closes the files (use it as a context manager).
What was logged in between (e.g. jax's backend probing) is kept in memory and written to the file
first; console-worthy records of that time are printed at once.

- Console (process 0 only, stderr): the project's own INFO lines (sem_repa_jax, data_pipelines,
  conversion), every library's WARNING and above, Python warnings. Lines are written through
  `tqdm.write`, which clears the open progress bars, writes and redraws them, so neither breaks
  the other. Other libraries' INFO/DEBUG (Orbax, jax, absl) stay off it.
- File (every process): every record that passes the loggers' levels, Orbax INFO included, with
  time, level, process index and origin (the logger's name; for absl records, which all share
  the logger 'absl', the calling module). Appended, so a resumed run adds to it. Process 0 writes
  `log.txt`, process i > 0 `log.<i>.txt`: one file per process, because appends from many hosts
  to one file on a network filesystem interleave or get lost.

A record stays off the console when logged with `extra=FILE_ONLY` or inside `file_only()` (e.g.
the per-step metric lines while the training bar shows the loss).

This module imports no other part of the package, so every layer may use it.
"""
import contextlib
import contextvars
import functools
import logging
import os
import sys
import time

from tqdm import tqdm

PROJECT_PACKAGES = ("sem_repa_jax", "data_pipelines", "conversion")
FILE_ONLY = {"console": False}
_FILE_FORMAT = "%(asctime)s.%(msecs)03d %(levelname)s p{process} %(origin)s:%(lineno)d] %(message)s"
_file_only = contextvars.ContextVar("file_only", default=False)


def log_path(workdir: str, process_index: int = 0) -> str:
  """`<workdir>/log.txt` for process 0, `<workdir>/log.<i>.txt` for process i."""
  name = "log.txt" if process_index == 0 else f"log.{process_index}.txt"
  return os.path.join(workdir, name)


@contextlib.contextmanager
def file_only(active: bool = True):
  """Records logged inside (this thread or task) go to the log files only, when `active`."""
  token = _file_only.set(bool(active) or _file_only.get())
  try:
    yield
  finally:
    _file_only.reset(token)


@functools.lru_cache(maxsize=None)
def module_of(pathname: str) -> str:
  """The dotted module name of a source file, from the longest sys.path entry that holds it."""
  path = os.path.abspath(pathname)
  root = ""
  for entry in sys.path:
    entry = os.path.join(os.path.abspath(entry or os.curdir), "")
    if path.startswith(entry) and len(entry) > len(root):
      root = entry
  parts = os.path.splitext(path[len(root):] if root else os.path.basename(path))[0].split(os.sep)
  if parts[-1] == "__init__" and len(parts) > 1:
    parts.pop()
  return ".".join(parts)


def origin_of(record: logging.LogRecord) -> str:
  """Who logged `record`: its logger's name, or for absl's shared logger the calling module."""
  if record.name == "absl" or record.name.startswith("absl."):
    return module_of(record.pathname)
  return record.name


def is_project(origin: str) -> bool:
  return origin.split(".")[0] in PROJECT_PACKAGES


class _Origin(logging.Filter):
  """Sets `record.origin` (see origin_of) for the formatters; passes every record."""

  def filter(self, record):
    if not hasattr(record, "origin"):
      record.origin = origin_of(record)
    return True


class _ConsoleFilter(logging.Filter):
  """The project's INFO and above; any library's WARNING and above; never FILE_ONLY records."""

  def filter(self, record):
    if not getattr(record, "console", True) or _file_only.get():
      return False
    return record.levelno >= logging.WARNING or (record.levelno >= logging.INFO and
                                                 is_project(record.origin))


class _ConsoleFormatter(logging.Formatter):
  """`HH:MM:SS message` for INFO; level and origin in front of warnings and errors."""

  def format(self, record):
    stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
    text = super().format(record)
    if record.levelno >= logging.WARNING:
      return f"{stamp} {record.levelname} {record.origin}: {text}"
    return f"{stamp} {text}"


class ConsoleHandler(logging.Handler):
  """Writes through tqdm.write, so open progress bars are cleared first and redrawn after.

  `stream` None: the current sys.stderr at each record (where tqdm draws its bars)."""

  def __init__(self, stream=None):
    super().__init__()
    self.stream = stream

  def emit(self, record):
    try:
      tqdm.write(self.format(record), file=self.stream or sys.stderr)
    except Exception:  # pylint: disable=broad-except
      self.handleError(record)


class RunLog:
  """The handlers `setup` installed; `close()` (or leaving the `with` block) flushes and removes
  them and puts back the handlers they replaced. An exception leaving the block is written, with
  its traceback, to the file only (the console gets Python's own report of it)."""

  def __init__(self, path: str, handlers: list, replaced: list):
    self.path, self._handlers, self._replaced = path, handlers, replaced

  def __enter__(self):
    return self

  def __exit__(self, kind, error, tb):
    if kind is not None and not (kind is SystemExit and not error.code):
      logging.getLogger(__name__).error("run ended by %s: %s", kind.__name__, error,
                                        exc_info=(kind, error, tb), extra=FILE_ONLY)
    self.close()

  def close(self):
    root = logging.getLogger()
    for h in self._handlers:
      root.removeHandler(h)
      h.close()
    for h in self._replaced:
      root.addHandler(h)
    self._handlers, self._replaced = [], []
    logging.captureWarnings(False)


class _EarlyRecords(logging.Handler):
  """Before `setup`: keeps every record for the log file and prints at once those the console
  shows (a warning before the workdir is known still reaches the user)."""

  def __init__(self, console: logging.Handler, replaced: list):
    super().__init__()
    self.records, self.console, self.replaced = [], console, replaced

  def emit(self, record):
    self.records.append(record)
    self.console.handle(record)


def _console_handler(stream=None) -> logging.Handler:
  console = ConsoleHandler(stream)
  console.addFilter(_Origin())            # before _ConsoleFilter, which reads record.origin
  console.addFilter(_ConsoleFilter())
  console.setFormatter(_ConsoleFormatter())
  return console


def hold(console_stream=None) -> None:
  """From process start until `setup`: the console is already quiet (libraries' start-up INFO,
  e.g. jax probing for backends, stays off it) and every record is kept for the log file, which
  `setup` writes first. Replaces the root logger's handlers (absl's stderr handler among them)."""
  root = logging.getLogger()
  if any(isinstance(h, _EarlyRecords) for h in root.handlers):
    return
  replaced = list(root.handlers)
  for h in replaced:
    root.removeHandler(h)
  if root.level == logging.NOTSET or root.level > logging.INFO:
    root.setLevel(logging.INFO)
  root.addHandler(_EarlyRecords(_console_handler(console_stream), replaced))


def setup(workdir: str, process_index: int = 0, *, console_stream=None) -> RunLog:
  """Routes every record to `log_path(workdir, process_index)` and, on process 0, the project's
  lines and all warnings to the console (see the module docstring). Replaces the root logger's
  handlers (absl's stderr handler among them); keeps the loggers' levels, lowering the root's to
  INFO if it was higher (absl's --verbosity sets it; the project's INFO lines must pass)."""
  os.makedirs(workdir, exist_ok=True)
  path = log_path(workdir, process_index)
  root = logging.getLogger()
  early = [h for h in root.handlers if isinstance(h, _EarlyRecords)]
  replaced = [h for h in root.handlers if not isinstance(h, _EarlyRecords)]
  for h in root.handlers[:]:
    root.removeHandler(h)
  for h in early:
    replaced += h.replaced                # put back on close what hold() took off
  if root.level == logging.NOTSET or root.level > logging.INFO:
    root.setLevel(logging.INFO)
  to_file = logging.FileHandler(path, mode="a", encoding="utf-8")
  to_file.setFormatter(logging.Formatter(_FILE_FORMAT.format(process=process_index),
                                         datefmt="%Y-%m-%d %H:%M:%S"))
  to_file.addFilter(_Origin())
  for h in early:                        # held since start-up: the file gets them first
    for record in h.records:
      to_file.handle(record)
  handlers = [to_file]
  if process_index == 0:
    handlers.append(_console_handler(console_stream))
  for h in handlers:
    root.addHandler(h)
  logging.captureWarnings(True)   # warnings.warn -> logger 'py.warnings' -> console and file
  logging.getLogger(__name__).info("log opened by process %d (pid %d): %s", process_index,
                                   os.getpid(), " ".join(sys.argv), extra=FILE_ONLY)
  return RunLog(path, handlers, replaced)
