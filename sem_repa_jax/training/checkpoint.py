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
    if keep < 1:
      raise ValueError(f"checkpoint.keep = {keep}: expected at least 1 (0 would delete the last "
                       "checkpoint, the run's result)")
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
    self.check_fits(abstract_state, step)
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
    restored = self.manager.restore(int(step), args=ocp.args.Composite(**items))
    logging.info("restored step %d from %s", step, self.directory)
    return restored["state"]

  def check_fits(self, abstract_state, step: int) -> None:
    """Raises one error naming every array of `abstract_state` that checkpoint `step` lacks, holds
    with another shape, or holds beyond it (a run resumed after its model changed)."""
    meta = self.manager.item_metadata(int(step))["state"]
    if meta is None:   # the manager has not read this step's metadata: read the item's own
      reader = ocp.StandardCheckpointer()
      meta = reader.metadata(os.path.join(self.directory, str(int(step)), "state"))
      reader.close()
    meta = getattr(meta, "item_metadata", meta)
    saved = _shapes(getattr(meta, "tree", meta))
    want = _shapes(abstract_state)
    problems = [f"{k}: saved {saved[k]}, this run {want[k]}" for k in sorted(saved.keys() & want.keys())
                if saved[k] != want[k]]
    problems += [f"{k}: not in the checkpoint" for k in sorted(want.keys() - saved.keys())]
    problems += [f"{k}: saved, not in this run" for k in sorted(saved.keys() - want.keys())]
    if problems:
      shown = "; ".join(problems[:8]) + (f"; and {len(problems) - 8} more" if len(problems) > 8
                                         else "")
      raise ValueError(f"{self.directory}/{step} does not fit this run's model ({len(problems)} "
                       f"arrays differ: {shown}); resume with the config that wrote it, or train "
                       "in a new workdir")

  def restore_saved(self, step: int | None = None) -> dict:
    """The saved state of `step` (default: latest) as it was written, without a target tree:
    nested dicts of host arrays (for reading a run after training, on any device set)."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no complete checkpoint in {self.directory}")
    return self.manager.restore(int(step), args=ocp.args.Composite(
        state=ocp.args.StandardRestore()))["state"]

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


def latest_step(workdir: str) -> int | None:
  """The last saved training step under <workdir>/checkpoints, or None (no checkpoint yet)."""
  if not os.path.isdir(os.path.join(workdir, "checkpoints")):
    return None
  ckpt = Checkpointer(workdir)
  try:
    return ckpt.latest_step()
  finally:
    ckpt.close()


def restore_variables(workdir: str, step: int | None = None, ema: bool = False) -> tuple[int, dict]:
  """(step, variables) of a training run's checkpoint: trained and frozen parts merged into one
  tree for `module.apply`, as host numpy arrays (for evaluation and sampling after training). With
  `ema`, the trained part is the exponential moving average (a run with optimizer.ema_decay > 0);
  asking for it from a checkpoint without one is an error."""
  import jax
  from sem_repa_jax.training.train_state import merge
  step = latest_step(workdir) if step is None else step
  if step is None:
    raise FileNotFoundError(f"{workdir}/checkpoints holds no checkpoint: train the stage first")
  ckpt = Checkpointer(workdir)
  state = ckpt.restore_saved(step)
  ckpt.close()
  trained = state["params"]
  if ema:
    if not state.get("ema"):
      raise ValueError(f"{workdir}/checkpoints/{step} holds no EMA of the parameters: train the "
                       "stage with optimizer.ema_decay > 0 or sample the raw parameters")
    trained = state["ema"]
  return step, jax.device_get(merge(trained, state["frozen"] or {}))


def load_into(state, path: str, attr, submodule: str | None = None,
              only: tuple[str, ...] | None = None, derive=None, keep=None):
  """Fills `state.<attr>` ('params' or 'frozen', or both as a tuple: a module whose trained and
  frozen parameters are split, e.g. a U-Net fine-tuned in its attention layers only) from a
  load_pretrained folder, straight into the state's shardings. With `submodule`, saved 'col/x'
  fills 'col/<submodule>/x' (a converted backbone inside a method's tree); without, names must
  match. `only`: the top-level modules ('col/<module>/...') to fill, the others keep their values
  (e.g. the alignment modules into a state whose frozen arrays also hold the backbone's buffers).
  Within the collections it fills, every saved array must find its place with the same shape, and
  every place under the submodule (or the `only` modules) must be filled: `derive(name) -> saved
  name or None` names, for a place the folder lacks, the saved array it starts as (e.g.
  StableAnimator's new adapter projections as copies of to_k / to_v), and the result is logged;
  `keep(name) -> bool` names places the folder may lack that keep the state's own (initialized)
  values, also logged (e.g. VividPose's new ID projections, to_v_id zero at init)."""
  import jax
  from absl import logging
  from flax import traverse_util
  from sem_repa_jax.models.pretrained import load_pretrained
  attrs = (attr,) if isinstance(attr, str) else tuple(attr)
  flats = {a: traverse_util.flatten_dict(dict(getattr(state, a)), sep="/") for a in attrs}

  def saved_name(k):
    if only is not None and k.split("/")[1] not in only:
      return None
    if submodule is None:
      return k
    col, name, rest = (k.split("/", 2) + ["", ""])[:3]
    return f"{col}/{rest}" if name == submodule else None
  places = {saved_name(k): (a, k) for a in attrs for k in flats[a] if saved_name(k) is not None}
  collections = {name.split("/")[0] for name in places}
  elsewhere = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  where = f"{'+'.join(attrs)}{'/' + submodule if submodule else ''}"

  def sharding_of(name, shape):
    if name.split("/")[0] not in collections:
      return elsewhere          # another collection of the folder (loaded into the other attr)
    if name not in places:
      raise ValueError(f"{path}: saved array {name!r} {shape} has no place in this model "
                       f"({where})")
    a, k = places[name]
    target = flats[a][k]
    if tuple(target.shape) != tuple(shape):
      raise ValueError(f"{path}: saved {name!r} has shape {tuple(shape)}, the model expects "
                       f"{tuple(target.shape)}")
    return target.sharding
  _, loaded = load_pretrained(path, sharding=sharding_of)
  loaded = traverse_util.flatten_dict(dict(loaded), sep="/")
  missing = sorted(set(places) - set(loaded))
  derived = {m: derive(m) for m in missing} if derive is not None else {}
  derived = {m: s for m, s in derived.items() if s is not None and s in loaded}
  missing = [m for m in missing if m not in derived]
  kept = {m for m in missing if keep is not None and keep(m)}
  missing = [m for m in missing if m not in kept]
  if missing:
    raise ValueError(f"{path} lacks {len(missing)} arrays this model needs, e.g. {missing[:5]}")
  if derived:
    logging.info("%s: %d arrays the folder lacks start as copies of others, e.g. %s <- %s", path,
                 len(derived), *next(iter(derived.items())))
  if kept:
    logging.info("%s: %d arrays the folder lacks keep their initial values, e.g. %s", path,
                 len(kept), min(kept))
  for name, (a, k) in places.items():  # (arrays of other collections are dropped here)
    if name in kept:
      continue
    source = loaded[derived.get(name, name)]
    if name in derived:  # a copy of its own: a train step donates every array once
      source = jax.device_put(jax.numpy.array(source, copy=True), flats[a][k].sharding)
    flats[a][k] = source.astype(flats[a][k].dtype)
  return state.replace(**{a: traverse_util.unflatten_dict(flats[a], sep="/") for a in attrs})


def _shapes(tree) -> dict:
  """{'params/a/kernel': shape} of every array-like leaf of a state or of saved metadata."""
  import jax
  out = {}

  def visit(path, leaf):
    shape = getattr(leaf, "shape", None)
    if shape is not None:
      name = "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))
                      for k in path)
      out[name] = tuple(shape)
  jax.tree_util.tree_map_with_path(visit, tree, is_leaf=lambda x: hasattr(x, "shape"))
  return out

