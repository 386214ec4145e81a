"""Entry point: `python -m sem_repa_jax.main --config configs/X.py [--config.a.b=v ...]`.

Logging is set up once the workdir and the process index are known (logging_setup.py): the
console keeps the project's lines, warnings and progress bars; <workdir>/log.txt gets everything.
"""
import os
import sys

from absl import app, logging
from ml_collections import config_flags

# Errors raised for what a user gave (values, paths, files): reported as one `error:` line.
USER_ERRORS = (ValueError, OSError)

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a configs/*.py file.",
                                          lock_config=True)


def write_resolved_config(config, workdir: str) -> str:
  """Writes the resolved config as JSON into `workdir` (atomically) and returns the path."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, "config.json")
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.write(config.to_json_best_effort(indent=2, sort_keys=True))
  os.replace(tmp, path)
  return path


def main(argv) -> int:
  del argv
  config = _CONFIG.value
  if config is None:
    print("usage: python -m sem_repa_jax.main --config configs/<name>.py", file=sys.stderr)
    return 2
  from sem_repa_jax import config_checks, jobs, logging_setup
  logging_setup.hold()     # a quiet console from the start; records kept for <workdir>/log.txt
  # Check the job name before touching any device, so a typo fails in milliseconds.
  try:
    run = jobs.get_job(config.job)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  from sem_repa_jax.training.mesh import initialize_distributed
  initialize_distributed(config)
  import jax
  try:
    config_checks.check_config(config, jax.device_count())
  except config_checks.ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  # From here on: a quiet console (process 0) and every record in <workdir>/log.txt.
  log_path = logging_setup.log_path(config.workdir, jax.process_index())
  try:
    with logging_setup.setup(config.workdir, jax.process_index()) as log:
      if jax.process_index() == 0:
        path = write_resolved_config(config, config.workdir)
        logging.info("job %s, resolved config in %s, log in %s", config.job, path, log.path)
      run(config)
  except USER_ERRORS as e:
    # What a user can cause (a bad input or value, a missing file) is one line naming it; the
    # traceback is in the log file (printed too with SEM_REPA_TRACEBACK=1).
    if os.environ.get("SEM_REPA_TRACEBACK"):
      raise
    print(f"error: {e}\n(traceback in {log_path}; SEM_REPA_TRACEBACK=1 prints it)",
          file=sys.stderr)
    return 2
  return 0


def entry():
  app.run(lambda argv: sys.exit(main(argv)))


if __name__ == "__main__":
  entry()
