"""The one way benchmarks time JAX against PyTorch: alternately in one process, medians.

Every JAX-vs-PyTorch figure in this project comes from `alternate`: each function is warmed up
(compiled) once, then the functions run in turn A B A B ... so that load from other processes hits
all of them alike, and the report gives medians with min/max, the thread counts and the load
average. A ratio taken with the 1-minute load average above the core count is marked LOADED: it is
not a result (PyTorch's thread pool suffers more from a loaded machine than XLA does).

  from benchmarks import harness
  res = harness.alternate({"jax": f_jax, "torch": f_torch}, repeats=5)
  print(harness.table(res, baseline="torch"))
"""
import dataclasses
import json
import os
import platform
import time
from typing import Callable, Dict, Optional

import numpy as np


@dataclasses.dataclass
class Timing:
  times: list

  @property
  def median(self) -> float:
    return float(np.median(self.times))

  @property
  def min(self) -> float:
    return float(np.min(self.times))

  @property
  def max(self) -> float:
    return float(np.max(self.times))

  def as_dict(self) -> dict:
    return {"median_s": self.median, "min_s": self.min, "max_s": self.max, "n": len(self.times)}


def load_average() -> tuple:
  """(1, 5, 15)-minute load averages, or (nan, nan, nan) where the OS has none."""
  try:
    return os.getloadavg()
  except OSError:
    return (float("nan"),) * 3


def loaded(cores: Optional[int] = None) -> bool:
  """True when the 1-minute load average is above the core count."""
  return load_average()[0] > (cores or os.cpu_count() or 1)


def machine() -> dict:
  """What a figure was measured on: cores, threads of each framework, load before and after."""
  info = {"platform": platform.platform(), "cpu_count": os.cpu_count(),
          "load_average": [round(x, 2) for x in load_average()]}
  try:
    import jax
    info["jax"] = jax.__version__
    info["jax_devices"] = [str(d) for d in jax.devices()]
  except Exception:   # a benchmark without JAX still reports the rest
    pass
  try:
    import torch
    info["torch"] = torch.__version__
    info["torch_threads"] = torch.get_num_threads()
  except Exception:
    pass
  return info


def alternate(fns: Dict[str, Callable[[], object]], repeats: int = 5, warmup: int = 1,
              block: Optional[Callable[[object], object]] = None) -> Dict[str, Timing]:
  """Seconds per call of each fn, measured in turns A B A B ... after `warmup` calls of each.

  block: applied to each result before the clock stops (e.g. jax.block_until_ready); by default
  results with `block_until_ready` are waited for.
  """
  if repeats < 1:
    raise ValueError(f"repeats={repeats}: expected at least 1")
  wait = block or _wait
  for fn in fns.values():
    for _ in range(warmup):
      wait(fn())
  times = {k: [] for k in fns}
  for _ in range(repeats):
    for k, fn in fns.items():
      t = time.perf_counter()
      wait(fn())
      times[k].append(time.perf_counter() - t)
  return {k: Timing(v) for k, v in times.items()}


def _wait(x):
  try:
    import jax
    return jax.block_until_ready(x)
  except ImportError:
    return x


def _rss_mib() -> float:
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def peak_rss_growth_mib(fn) -> float:
  """Peak resident memory (MiB) above the level before fn, sampled every 2 ms while it runs (the
  process-lifetime ru_maxrss would include compilation and earlier runs). For CPU memory of
  frameworks whose allocations tracemalloc does not see (torch tensors, XLA buffers); Linux."""
  import threading
  base, peak, done = _rss_mib(), [0.0], threading.Event()

  def sample():
    while not done.is_set():
      peak[0] = max(peak[0], _rss_mib())
      time.sleep(0.002)

  thread = threading.Thread(target=sample, daemon=True)
  thread.start()
  try:
    fn()
  finally:
    done.set()
    thread.join()
  return max(peak[0], _rss_mib()) - base


def table(results: Dict[str, Timing], baseline: Optional[str] = None, title: str = "") -> str:
  """A text table of medians (min..max) and, with `baseline`, each row's ratio to it, followed by
  the load average (marked LOADED above the core count)."""
  lines = [title] if title else []
  lines.append(f"{'':<24} {'median s':>10} {'min s':>10} {'max s':>10}" +
               (f" {'ratio':>8}" if baseline else ""))
  base = results[baseline].median if baseline else None
  for k, t in results.items():
    row = f"{k:<24} {t.median:>10.4f} {t.min:>10.4f} {t.max:>10.4f}"
    if base:
      row += f" {t.median / base:>7.2f}x"
    lines.append(row)
  lines.append(load_line())
  return "\n".join(lines)


def load_line() -> str:
  la, cores = load_average(), os.cpu_count() or 1
  mark = "  LOADED: not a result" if la[0] > cores else ""
  return f"load average {la[0]:.2f} {la[1]:.2f} {la[2]:.2f} on {cores} cores{mark}"


def emit(figures: dict, path: str = "") -> dict:
  """A benchmark's figures at the end of its main: written to `path` (write_json), or printed as
  JSON (the first 3000 characters, Timing values left out: their table was printed)."""
  if path:
    write_json(path, figures)
  else:
    print(json.dumps({k: v for k, v in figures.items() if not isinstance(v, Timing)}, indent=1,
                     default=str)[:3000])
  return figures


def write_json(path: str, payload: dict) -> str:
  """payload + machine() to `path`, atomically."""
  out = dict(payload, machine=machine())
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(out, f, indent=2, default=_jsonable)
  os.replace(tmp, path)
  return path


def _jsonable(x):
  if isinstance(x, Timing):
    return x.as_dict()
  if isinstance(x, (np.floating, np.integer)):
    return x.item()
  raise TypeError(f"not JSON-serializable: {type(x).__name__}")
