"""Metrics: workdir/metrics.jsonl (one JSON object per logged step) and TensorBoard, process 0 only."""
import json
import math
import os

import jax
import numpy as np
from absl import logging


class MetricsWriter:
  """Writes scalars per step. On resume at `start_step`, lines of later steps (written after the
  checkpoint that is being resumed) are dropped so the file tells one consistent history."""

  def __init__(self, workdir: str, start_step: int = 0, tensorboard: bool = True):
    """On resume (start_step > 0) TensorBoard hides the events of later steps, as this file drops
    their lines, so every step shows once."""
    self.enabled = jax.process_index() == 0
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb = None
    if not self.enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    self._truncate_after(start_step)
    if tensorboard:
      from tensorboardX import SummaryWriter
      # One event file per (re)start, named by its first step: a resume never overwrites the
      # file of the run it resumes (tensorboardX names files by the second and host alone).
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"),
                               purge_step=start_step + 1 if start_step else None,
                               filename_suffix=f".from_step_{start_step}")

  def _truncate_after(self, step: int) -> None:
    if not os.path.exists(self.path):
      return
    with open(self.path) as f:
      lines = [l for l in f if l.strip()]
    rows = []
    for i, line in enumerate(lines):
      try:
        rows.append(json.loads(line))
      except json.JSONDecodeError:
        if i < len(lines) - 1:
          raise ValueError(f"{self.path}: line {i + 1} is not JSON (only a torn last line, from a "
                           "run killed while writing, is dropped on resume)") from None
        logging.warning("%s: dropped its torn last line (the run was killed while writing it)",
                        self.path)
    kept = [l for l, r in zip(lines, rows) if r.get("step", 0) <= step]
    if len(kept) != len(lines):
      tmp = self.path + ".tmp"
      with open(tmp, "w") as f:
        f.writelines(l if l.endswith("\n") else l + "\n" for l in kept)
      os.replace(tmp, self.path)

  def write(self, step: int, scalars: dict) -> None:
    if not self.enabled:
      return
    row = {"step": int(step)}
    for k, v in scalars.items():
      v = float(np.asarray(v))
      row[k] = v if math.isfinite(v) else str(v)   # JSON has no NaN/Inf
    with open(self.path, "a") as f:
      f.write(json.dumps(row, sort_keys=True) + "\n")
    if self._tb is not None:
      for k, v in scalars.items():
        self._tb.add_scalar(k, float(np.asarray(v)), int(step))
      self._tb.flush()
    logging.info("step %d: %s", step, ", ".join(f"{k}={row[k]:.6g}" if isinstance(row[k], float)
                                                else f"{k}={row[k]}" for k in sorted(scalars)))

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
