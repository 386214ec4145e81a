"""Jobs: one module per value of `config.job`, each exposing `run(config)` (finetune returns its final
train state for callers that drive it directly; the CLI ignores what a job returns).

A job is discovered by its file name, so adding a job is adding a file.
"""
import importlib
import pkgutil


def available_jobs() -> list[str]:
  return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def get_job(name: str):
  """Returns the `run` function of job `name`, or raises ValueError listing the valid jobs."""
  jobs = available_jobs()
  if name not in jobs:
    raise ValueError(f"unknown job {name!r}; valid jobs: {', '.join(jobs)}")
  return importlib.import_module(f"{__name__}.{name}").run
