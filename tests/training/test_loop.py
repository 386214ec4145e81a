import json
import logging
import os

import jax
import numpy as np
import pytest
from tqdm import tqdm

from sem_repa_jax.training import loop, sharding
from sem_repa_jax.training.checkpoint import Checkpointer
from sem_repa_jax.training.metrics import MetricsWriter
from tests.training import toy

STEPS = 6


@pytest.fixture(scope="module")
def job():
  """One compiled toy job shared by the tests: (2,4,1) mesh, frozen head, EMA."""
  cfg = toy.config((2, 4, 1))
  return cfg, toy.setup(cfg, frozen_prefixes=("params/head",), ema_decay=0.9)


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(tree))]


class CrashAt:
  """A data iterator that dies when asked for batch number `n` (like a preempted host)."""

  def __init__(self, inner, n):
    self.inner, self.n, self.count = inner, n, 0

  def __next__(self):
    self.count += 1
    if self.count == self.n:
      raise KeyboardInterrupt("simulated preemption")
    return next(self.inner)

  def get_state(self):
    return self.inner.get_state()


def _run(job, workdir, data, crash_at=None):
  cfg, (mesh, rules, abstract, init, step_fn) = job
  ckpt = Checkpointer(workdir, cfg)
  state, start = ckpt.restore_or(abstract, init, data)
  writer = MetricsWriter(str(workdir), start)
  it = CrashAt(data, crash_at) if crash_at else data
  try:
    return loop.train(state, step_fn, it, mesh=mesh, rules=rules, start_step=start,
                      num_steps=STEPS, checkpointer=ckpt, writer=writer, config=cfg), start
  finally:
    ckpt.wait()
    writer.close()


def test_kill_and_resume_equals_uninterrupted_run(job, tmp_path):
  data_a = toy.dataset(16)
  state_a, _ = _run(job, tmp_path / "a", data_a)

  data_b = toy.dataset(16)
  with pytest.raises(KeyboardInterrupt):
    _run(job, tmp_path / "b", data_b, crash_at=6)   # dies in step 6, after the step-4 checkpoint
  data_b = toy.dataset(16)                           # a new process: fresh pipeline
  state_b, start = _run(job, tmp_path / "b", data_b)
  assert start == 4
  assert int(state_b.step) == STEPS
  for x, y in zip(_leaves(state_a), _leaves(state_b)):   # params, frozen, opt state, EMA, rng
    np.testing.assert_array_equal(x, y)
  assert data_a.get_state() == data_b.get_state()
  np.testing.assert_array_equal(next(data_a)["x"], next(data_b)["x"])

  rows = [json.loads(l) for l in open(tmp_path / "b" / "metrics.jsonl")]
  assert [r["step"] for r in rows] == [2, 4, 6]
  rows_a = [json.loads(l) for l in open(tmp_path / "a" / "metrics.jsonl")]
  assert rows == rows_a
  assert {"loss", "mse", "l1", "grad_norm", "skipped", "learning_rate"} <= set(rows[0])
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path / "a" / "tensorboard"))


def test_nan_guard_skips_update_and_frozen_modules_do_not_train(job):
  cfg, (mesh, rules, abstract, init, step_fn) = job
  state = init()
  assert "head" not in state.params["params"] and "head" in state.frozen["params"]
  assert all("head" not in jax.tree_util.keystr(p)
             for p, _ in jax.tree_util.tree_flatten_with_path(state.opt_state)[0])
  before = jax.device_get(state)
  batch = next(toy.dataset(16))
  bad = dict(batch, x=batch["x"].copy())
  bad["x"][3, 5] = np.nan
  state, m = step_fn(state, sharding.shard_batch(bad, mesh, rules))
  assert float(m["skipped"]) == 1.0 and not np.isfinite(float(m["loss"]))
  assert int(state.step) == 1
  after = jax.device_get(state)
  for name in ("params", "opt_state", "ema", "frozen"):
    for x, y in zip(_leaves(getattr(before, name)), _leaves(getattr(after, name))):
      np.testing.assert_array_equal(x, y)

  state, m = step_fn(state, sharding.shard_batch(batch, mesh, rules))
  assert float(m["skipped"]) == 0.0
  after = jax.device_get(state)
  changed = [not np.array_equal(x, y) for x, y in zip(_leaves(before.params), _leaves(after.params))]
  assert all(changed)
  for x, y in zip(_leaves(before.frozen), _leaves(after.frozen)):
    np.testing.assert_array_equal(x, y)


def test_exhausted_data_is_explained(job):
  cfg, (mesh, rules, abstract, init, step_fn) = job
  with pytest.raises(ValueError, match="ran out before step 1 of 3.*repeat"):
    loop.train(None, step_fn, iter([]), mesh=mesh, rules=rules, start_step=0, num_steps=3)


def test_step_compiles_once_before_the_bar_and_logs_time_and_memory(tmp_path, monkeypatch,
                                                                     caplog):
  cfg = toy.config((2, 4, 1), workdir=tmp_path)
  cfg.job = "toy_job"
  mesh, rules, abstract, init, step_fn = toy.setup(cfg)
  compiles = lambda: sum("Finished XLA compilation of jit(step)" in r.getMessage()
                         for r in caplog.records)
  at_bar = []

  def bar(*args, **kwargs):
    at_bar.append((compiles(), kwargs["desc"]))
    return tqdm(*args, **kwargs)
  monkeypatch.setattr(loop, "tqdm", bar)
  caplog.set_level(logging.INFO)
  with jax.log_compiles():
    loop.train(init(), step_fn, toy.dataset(16), mesh=mesh, rules=rules, start_step=0,
               num_steps=3, config=cfg)
    assert at_bar == [(1, "toy_job")]      # compiled before the bar (named after the job) starts
    assert compiles() == 1                 # and every step ran that one executable
    loop.train(init(), step_fn, toy.dataset(16), mesh=mesh, rules=rules, start_step=0,
               num_steps=2, config=cfg)
  assert compiles() == 1
  logged = [r.getMessage() for r in caplog.records if "train step compiled" in r.getMessage()]
  assert len(logged) == 1, logged           # once per compiled step, not per call of train
  assert logged[0].startswith("toy_job: train step compiled in ")
  for figure in ("argument", "output", "temp", "generated_code"):
    assert f"{figure} " in logged[0] and " MiB" in logged[0]
  figures = loop.memory_figures(step_fn.compiled)
  assert figures["argument_bytes"] > 0 and figures["output_bytes"] > 0
