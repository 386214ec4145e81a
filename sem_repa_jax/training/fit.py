"""`fit`: the generic training driver every method's training job calls.

It builds the sharded train state from the config (mesh, logical rules, optimizer, EMA), restores
the latest checkpoint of `config.workdir` with the data iterator's position or initializes, and runs
the step loop with checkpointing and metrics. A method supplies the model, its loss and its data.

  state, mesh = fit(config, model, loss_fn, (example_batch_inputs...), dataset=my_grain_dataset,
                    frozen_prefixes=("params/teacher",), prepare_state=load_pretrained_weights,
                    num_steps=config.train.num_steps)

loss_fn(variables, batch, rng) -> (loss, {name: scalar}) as in training/loop.py.
"""
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from sem_repa_jax.training import checkpoint, loop, mesh as mesh_lib, optimizers, sharding
from sem_repa_jax.training.metrics import MetricsWriter
from sem_repa_jax.training.train_state import make_train_state


def data_parallelism(mesh, rules) -> int:
  """How many ways the batch is split: the devices of the mesh axes the 'batch' rule names."""
  batch_axes = _batch_axes(rules)
  other = int(np.prod([mesh.shape[a] for a in mesh.axis_names if a not in batch_axes]))
  return sharding.batch_sharding(mesh, rules).num_devices // other


def fit(config, model, loss_fn, init_args, *, dataset, num_steps: int, frozen_prefixes=(),
        prepare_state=None):
  """Trains `model` on `dataset` (a grain dataset of this process's batches) for `num_steps`
  steps in total (a resumed run does the rest) and returns (state, mesh).

  init_args: what `model.init(key, *init_args)` takes (an example batch of one). On a fresh state
  (no checkpoint yet), `prepare_state(state) -> state` runs first, e.g. to load pretrained weights;
  the EMA, if any, then starts from the prepared parameters."""
  mesh = mesh_lib.make_mesh(config)
  rules = sharding.axis_rules(config)
  parallel = data_parallelism(mesh, rules)
  if config.data.batch_size % parallel:
    raise ValueError(f"config.data.batch_size={config.data.batch_size} is not divisible by the "
                     f"{parallel}-way data parallelism of mesh {dict(mesh.shape)}")
  tx, schedule = optimizers.make_optimizer(config.optimizer)
  opt = optimizers.resolve_config(config.optimizer)
  abstract, init = make_train_state(model.init, jax.random.key(config.seed), *init_args, tx=tx,
                                    mesh=mesh, rules=rules, rng=config.seed + 1,
                                    frozen_prefixes=frozen_prefixes, ema_decay=opt.ema_decay)
  data = iter(dataset)
  ckpt = checkpoint.Checkpointer(config.workdir, config)

  def fresh():
    state = init()
    if prepare_state is not None:
      state = prepare_state(state)
      if state.ema is not None:   # the EMA starts from the prepared (e.g. pretrained) parameters
        state = state.replace(ema=jax.tree.map(jnp.copy, state.params))
    return state
  state, start = ckpt.restore_or(abstract, fresh, data)
  if start:
    logging.info("resuming at step %d", start)
  step_fn = loop.compile_train_step(loop.make_train_step(loss_fn, schedule), abstract, mesh, rules)
  writer = MetricsWriter(config.workdir, start) if jax.process_index() == 0 else None
  state = loop.train(state, step_fn, data, mesh=mesh, rules=rules, start_step=start,
                     num_steps=num_steps, checkpointer=ckpt, writer=writer, config=config)
  if writer is not None:
    writer.close()
  return state, mesh


def _batch_axes(rules) -> tuple:
  for name, axes in rules:
    if name == "batch":
      return (axes,) if isinstance(axes, str) else tuple(axes or ())
  return ()
