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

Precision: keep param_dtype float32 (master weights, fp32 gradients and moments) and set the
modules' dtype to bfloat16 for compute; nothing here casts.
"""
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from tqdm import tqdm

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


def compile_train_step(train_step: Callable, abstract_state, mesh, rules) -> Callable:
  """jit with the state donated and kept in its shardings; batches arrive already sharded
  (sharding.shard_batch). Logical constraints inside the model resolve with `rules` on `mesh`."""
  state_shardings = shardings_of(abstract_state)

  def step(state, batch):
    with nn.logical_axis_rules(rules):
      return train_step(state, batch)

  jitted = jax.jit(step, in_shardings=(state_shardings, None),
                   out_shardings=(state_shardings, sharding_lib.replicated(mesh)),
                   donate_argnums=(0,))

  def run(state, batch):
    with jax.set_mesh(mesh):
      return jitted(state, batch)
  return run


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
  bar = tqdm(total=num_steps, initial=start_step, disable=not progress_bar or jax.process_index() != 0,
             desc="train", dynamic_ncols=True)
  pending = []
  for step in range(start_step, num_steps):
    try:
      host_batch = next(data_iterator)
    except StopIteration:
      raise ValueError(f"the data iterator ran out before step {step + 1} of {num_steps}; "
                       "repeat the dataset (grain: .repeat()) or lower the number of steps") from None
    batch = sharding_lib.shard_batch(host_batch, mesh, rules)
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
