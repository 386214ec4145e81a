"""Checkpoints of the train state, the data iterator position and the config (Orbax).

Layout: workdir/checkpoints/<step>/{state, data, config}. Orbax writes each step into a temporary
directory and renames it when complete, so a crash mid-save leaves only a `*.orbax-checkpoint-tmp*`
directory that `latest_step` ignores; the previous step stays restorable. With async saving the
arrays are copied to host memory before `save` returns, and written in the background while
training goes on.
"""
import json
import os

import grain
import orbax.checkpoint as ocp
from absl import logging


class _IteratorSnapshot:
  """The iterator's state taken when `save` is called: the data may be written later (async),
  after the live iterator has moved on."""

  def __init__(self, state):
    self._state = json.dumps(state).encode()

  def get_state(self) -> bytes:
    return self._state


class Checkpointer:
  """Keeps the last `keep` checkpoints under `workdir/checkpoints`."""

  def __init__(self, workdir: str, config=None, *, keep: int | None = None,
               async_save: bool | None = None):
    c = config.get("checkpoint") if config is not None else None
    keep = keep if keep is not None else (c.keep if c is not None else 3)
    async_save = async_save if async_save is not None else (c.async_save if c is not None else True)
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    self._config_json = (json.loads(config.to_json_best_effort())
                         if config is not None and hasattr(config, "to_json_best_effort")
                         else config)
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           enable_async_checkpointing=async_save)
    self.manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state, data_iterator=None) -> None:
    """Starts saving `state` (and the iterator's current position) as `step`."""
    items = {"state": ocp.args.StandardSave(state)}
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointSave(_IteratorSnapshot(data_iterator.get_state()))
    if self._config_json is not None:
      items["config"] = ocp.args.JsonSave(self._config_json)
    self.manager.save(int(step), args=ocp.args.Composite(**items), force=True)

  def restore(self, abstract_state, step: int | None = None, data_iterator=None):
    """Restores `step` (default: latest) into the shardings of `abstract_state`.

    `abstract_state` holds jax.ShapeDtypeStructs with .sharding (make_train_state gives one; a
    different mesh than at save time is fine). `data_iterator`, if given, is moved to the saved
    position. Returns the state.
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no complete checkpoint in {self.directory}")
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
    restored = self.manager.restore(int(step), args=ocp.args.Composite(**items))
    logging.info("restored step %d from %s", step, self.directory)
    return restored["state"]

  def restore_or(self, abstract_state, init_fn, data_iterator=None):
    """(state, step): the latest checkpoint if there is one, else `init_fn()` at step 0."""
    step = self.latest_step()
    if step is None:
      return init_fn(), 0
    return self.restore(abstract_state, step, data_iterator), int(step)

  def saved_config(self, step: int | None = None) -> dict:
    step = self.latest_step() if step is None else step
    return self.manager.restore(int(step), args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]

  def reached_preemption(self, step: int) -> bool:
    """True on every host at the same step once the cluster announced a preemption (SIGTERM on a
    multi-host run, via jax.distributed's preemption service); always False on one process."""
    return self.manager.reached_preemption(int(step))

  def wait(self) -> None:
    """Blocks until the last async save is on disk."""
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()
