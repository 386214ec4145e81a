"""The generic training loop. A job supplies a loss; everything else is shared.

How a job uses it:

  from sem_repa_jax.training import checkpoint, loop, mesh as mesh_lib, optimizers, sharding
  from sem_repa_jax.training.metrics import MetricsWriter
  from sem_repa_jax.training.train_state import make_train_state

  mesh = mesh_lib.make_mesh(config)                     # after mesh_lib.initialize_distributed
  rules = sharding.axis_rules(config)
  tx, schedule = optimizers.make_optimizer(config.optimizer)
  abstract_state, init = make_train_state(
      module.init, jax.random.key(config.seed), example_inputs, tx=tx, mesh=mesh, rules=rules,
      rng=config.seed, frozen_prefixes=("params/structure_alignment",), ema_decay=0.0)

  def loss_fn(variables, batch, rng):                   # variables = trained + frozen
    pred = module.apply(variables, batch["x"], rngs={"dropout": rng})
    terms = {"mse": ((pred - batch["y"]) ** 2).mean()}
    return terms["mse"], terms                          # (scalar loss, named terms to log)

  step_fn = loop.compile_train_step(loop.make_train_step(loss_fn, schedule),
                                    abstract_state, mesh, rules)
  ckpt = checkpoint.Checkpointer(config.workdir, config)
  data = iter(dataset)                                  # a grain DatasetIterator (this host's slice)
  state, start = ckpt.restore_or(abstract_state, init, data)   # exact step and data position
  state = loop.train(state, step_fn, data, mesh=mesh, rules=rules, start_step=start,
                     num_steps=config.num_train_steps, checkpointer=ckpt,
                     writer=MetricsWriter(config.workdir, start), config=config)

`train` compiles the step on the first batch before its progress bar starts (the bar's ETA then
excludes compilation) and logs the compile time and the compiled memory figures once.

Precision: keep param_dtype float32 (master weights, fp32 gradients and moments) and set the
modules' dtype to bfloat16 for compute; nothing here casts.
"""
import time
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from tqdm import tqdm

from sem_repa_jax import logging_setup
from sem_repa_jax.training import sharding as sharding_lib
from sem_repa_jax.training.train_state import TrainState, merge, shardings_of


def make_train_step(loss_fn: Callable, schedule: optax.Schedule | None = None) -> Callable:
  """A pure `train_step(state, batch) -> (state, metrics)`.

  loss_fn(variables, batch, rng) -> (loss, {name: scalar}); variables are the trained and frozen
  trees merged (frozen ones behind stop_gradient). The step's key is fold_in(state.rng, step).
  A non-finite loss or gradient norm skips the update: params, optimizer state and EMA stay as
  they were, the step counter advances (the batch is consumed), metrics['skipped'] is 1.
  """
  def train_step(state: TrainState, batch):
    rng = jax.random.fold_in(state.rng, state.step)

    def loss_of(params):
      return loss_fn(merge(params, jax.lax.stop_gradient(state.frozen)), batch, rng)

    (loss, terms), grads = jax.value_and_grad(loss_of, has_aux=True)(state.params)
    grad_norm = optax.global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    updated = state.apply_gradients(grads)
    kept = jax.tree.map(lambda new, old: jnp.where(finite, new, old), updated, state)
    kept = kept.replace(step=state.step + 1)
    metrics = {"loss": loss, **terms, "grad_norm": grad_norm,
               "skipped": (~finite).astype(jnp.float32)}
    if schedule is not None:
      metrics["learning_rate"] = schedule(state.step)
    return kept, metrics
  return train_step


class TrainStep:
  """`step(state, batch) -> (state, metrics)`: the jitted step, compiled ahead of time by
  `compile(batch)` so that compilation happens before the progress bar starts (its ETA then
  counts steps only). Batches of other shapes or shardings than the compiled one go through jit.
  `compiled`: the ahead-of-time executable (None until `compile`)."""

  def __init__(self, jitted, abstract_state, mesh):
    self._jitted, self._abstract_state, self._mesh = jitted, abstract_state, mesh
    self.compiled, self._batch_spec = None, None

  def compile(self, batch) -> dict | None:
    """Lowers and compiles for the abstract state and `batch`'s shapes and shardings; returns
    {'compile_s': seconds, and the compiled memory figures in bytes where the backend has them},
    or None when it is already compiled for such batches (a second `train` on the same step)."""
    spec = _spec_of(batch)
    if self.compiled is not None and spec == self._batch_spec:
      return None
    t0 = time.perf_counter()
    with jax.set_mesh(self._mesh):
      self.compiled = self._jitted.lower(self._abstract_state, spec).compile()
    self._batch_spec = spec
    return {"compile_s": time.perf_counter() - t0, **memory_figures(self.compiled)}

  def __call__(self, state, batch):
    with jax.set_mesh(self._mesh):
      if self.compiled is not None and _spec_of(batch) == self._batch_spec:
        return self.compiled(state, batch)
      return self._jitted(state, batch)


def compile_train_step(train_step: Callable, abstract_state, mesh, rules) -> TrainStep:
  """jit with the state donated and kept in its shardings; batches arrive already sharded
  (sharding.shard_batch). Logical constraints inside the model resolve with `rules` on `mesh`.
  `train` compiles it ahead of time on the first batch (TrainStep.compile)."""
  state_shardings = shardings_of(abstract_state)

  def step(state, batch):
    with nn.logical_axis_rules(rules):
      return train_step(state, batch)

  jitted = jax.jit(step, in_shardings=(state_shardings, None),
                   out_shardings=(state_shardings, sharding_lib.replicated(mesh)),
                   donate_argnums=(0,))
  return TrainStep(jitted, abstract_state, mesh)


_MEMORY_FIELDS = (("argument", "argument_size_in_bytes"), ("output", "output_size_in_bytes"),
                  ("alias", "alias_size_in_bytes"), ("temp", "temp_size_in_bytes"),
                  ("generated_code", "generated_code_size_in_bytes"))


def memory_figures(compiled) -> dict:
  """compiled.memory_analysis() as {'<field>_bytes': int} (per device); {} where unavailable."""
  try:
    stats = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except  (backends without it raise various errors)
    return {}
  if stats is None:
    return {}
  return {f"{name}_bytes": int(getattr(stats, attr)) for name, attr in _MEMORY_FIELDS
          if getattr(stats, attr, None) is not None}


def _spec_of(batch):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), batch)


def _mib(n: int) -> str:
  return f"{n / 2 ** 20:.1f} MiB"


def _log_compiled(name: str, figures: dict) -> None:
  memory = ", ".join(f"{k[:-len('_bytes')]} {_mib(v)}" for k, v in figures.items()
                     if k.endswith("_bytes"))
  logging.info("%s: train step compiled in %.1f s%s", name, figures["compile_s"],
               f" (memory per device: {memory})" if memory else "")


def _next_batch(data_iterator, step: int, num_steps: int, mesh, rules):
  try:
    host_batch = next(data_iterator)
  except StopIteration:
    raise ValueError(f"the data iterator ran out before step {step + 1} of {num_steps}; "
                     "repeat the dataset (grain: .repeat()) or lower the number of steps") from None
  return sharding_lib.shard_batch(host_batch, mesh, rules)


def train(state, step_fn, data_iterator, *, mesh, rules, start_step: int, num_steps: int,
          checkpointer=None, writer=None, config=None, log_every: int | None = None,
          checkpoint_every: int | None = None, progress_bar: bool | None = None):
  """Runs steps start_step..num_steps-1; returns the final state (saved when a checkpointer is given).

  Metrics are fetched from the device only every `log_every` steps (mean over the interval;
  'skipped' as a count), so the host never waits on each step. A checkpoint is saved every
  `checkpoint_every` steps (0: only at the end) and at the end. Unset arguments come from
  config.log_every_steps, config.checkpoint.every_steps and config.progress_bar. When the cluster
  announces a preemption, every host saves the same step and returns early.
  """
  if log_every is None:
    log_every = config.log_every_steps if config is not None else 10
  if checkpoint_every is None:
    checkpoint_every = config.checkpoint.every_steps if config is not None else 0
  if progress_bar is None:
    progress_bar = bool(config.progress_bar) if config is not None else False
  name = config.job if config is not None and config.get("job") else "train"
  batch = _next_batch(data_iterator, start_step, num_steps, mesh, rules) \
      if start_step < num_steps else None
  # Compiling before the bar starts keeps compilation out of its rate and ETA.
  figures = step_fn.compile(batch) if batch is not None and hasattr(step_fn, "compile") else None
  if figures is not None:
    _log_compiled(name, figures)
  bar = tqdm(total=num_steps, initial=start_step, desc=name, unit="step", dynamic_ncols=True,
             disable=not progress_bar or jax.process_index() != 0)
  pending = []
  for step in range(start_step, num_steps):
    if step > start_step:
      batch = _next_batch(data_iterator, step, num_steps, mesh, rules)
    state, metrics = step_fn(state, batch)
    pending.append(metrics)
    done = step + 1
    if done % log_every == 0 or done == num_steps:
      fetched = jax.device_get(pending)
      pending = []
      # Averages over the updates that happened; a skipped step's NaN would hide the rest.
      used = [m for m in fetched if not m["skipped"]] or fetched
      summary = {k: float(np.mean([m[k] for m in used])) for k in fetched[0]}
      summary["skipped"] = float(sum(m["skipped"] for m in fetched))
      if summary["skipped"]:
        logging.warning("steps %d-%d: %d update(s) skipped for a non-finite loss or gradient",
                        done - len(fetched) + 1, done, int(summary["skipped"]))
      if writer is not None:
        with logging_setup.file_only(not bar.disable):   # the bar shows the loss meanwhile
          writer.write(done, summary)
      bar.set_postfix(loss=f"{summary['loss']:.4g}")
    bar.update(1)
    preempted = checkpointer is not None and checkpointer.reached_preemption(done)
    if checkpointer is not None and (done == num_steps or preempted or
                                     (checkpoint_every and done % checkpoint_every == 0)):
      checkpointer.save(done, state, data_iterator)
    if preempted:
      logging.warning("preempted: saved step %d, stopping", done)
      break
  bar.close()
  if checkpointer is not None:
    checkpointer.wait()
  return state
