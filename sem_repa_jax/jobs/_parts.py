"""What the training jobs of methods made of several networks share (train_animator,
train_vividpose): the converted folder a network starts from, checked by kind, and the export of
every trained network as a load_pretrained folder of its kind.

Config fields read here: config.{workdir, dtype, param_dtype}.
"""
import dataclasses
import os

import jax
import jax.numpy as jnp

from sem_repa_jax.models.pretrained import read_pretrained_config, save_pretrained

EXPORT_DIRNAME = "export"


def folder_config(path: str, field: str, kind: str) -> dict:
  """The module config a converted folder holds (config.model.<field> = path), which must be a
  `kind` one."""
  if not os.path.isdir(path):
    raise FileNotFoundError(f"config.model.{field} = {path}: no such folder (write it with "
                            f"`python -m conversion {kind} --src ... --dst {path}`)")
  cfg = read_pretrained_config(path)
  if cfg["kind"] != kind:
    raise ValueError(f"config.model.{field} = {path} holds a converted {cfg['kind']!r} model; "
                     f"expected a {kind!r} one (python -m conversion {kind})")
  return dict(cfg["module_kwargs"]["config"])


def export_parts(config, state, parts) -> str:
  """The trained networks (state.variables(), or the EMA of the trained part where kept) as
  load_pretrained folders <workdir>/export/<name>; parts: (name in the variable tree, kind, its
  module config dataclass) each. Returns the export folder."""
  from sem_repa_jax.training.train_state import merge
  params = state.ema if state.ema is not None else state.params
  variables = jax.device_get(merge(params, state.frozen))
  root = os.path.join(config.workdir, EXPORT_DIRNAME)
  if jax.process_index() == 0:
    for name, kind, module_config in parts:
      kwargs = {"config": dataclasses.asdict(module_config), "dtype": str(jnp.dtype(config.dtype)),
                "param_dtype": str(jnp.dtype(config.param_dtype))}
      tree = {col: sub[name] for col, sub in variables.items() if name in sub}
      save_pretrained(os.path.join(root, name), kind=kind, module_kwargs=kwargs, variables=tree,
                      source=f"{os.path.abspath(config.workdir)} step {int(state.step)}"
                             f"{' (EMA)' if state.ema is not None else ''}")
  return root


def prepare_from_folders(config, folders, options=None):
  """fit's `prepare_state`: each network whose config.model.<field> names a folder is loaded
  into the state (params and frozen, straight into their shardings), the others keep their
  fresh initialization (logged). folders: (field, kind, name in the tree) each; options:
  {name: load_into keyword arguments} (e.g. derive= or keep= for a U-Net's new projections)."""
  from absl import logging
  from sem_repa_jax.training.checkpoint import load_into
  m, options = config.model, options or {}

  def prepare(state):
    for field, _, name in folders:
      path = m.get(field)
      if not path:
        logging.info("%s starts from a fresh initialization (config.model.%s is empty)", name,
                     field)
        continue
      state = load_into(state, path, ("params", "frozen"), name, **options.get(name, {}))
      logging.info("%s loaded from %s", name, path)
    return state
  return prepare


def latent_problems(example, in_channels: int, maps, compression: int, by: str,
                    face_masks: bool = True) -> list:
  """What in an example batch of records does not fit a U-Net taking `in_channels` (latents +
  reference latents): the reference latents against one frame, each of the per-frame condition
  images `maps` over `compression` (what `by` compresses) against the latent frames, and the face
  masks at latent size."""
  x0 = example["video_latents"]
  problems = []
  if 2 * x0.shape[-1] != in_channels:
    problems.append(f"video_latents have {x0.shape[-1]} channels; the U-Net takes "
                    f"{in_channels} = latents + reference latents")
  if example["reference_latents"].shape[1:] != x0.shape[2:]:
    problems.append(f"reference_latents {example['reference_latents'].shape[1:]} != one frame of "
                    f"video_latents {x0.shape[2:]}")
  for name in maps:
    s = example[name].shape
    if (s[1], s[2] // compression, s[3] // compression) != x0.shape[1:4]:
      problems.append(f"{name} {s[1:4]} over {by} compression {compression} do not give the "
                      f"latent frames {x0.shape[1:4]}")
  if face_masks and example["face_weight_masks"].shape[1:] != x0.shape[1:4]:
    problems.append(f"face_weight_masks {example['face_weight_masks'].shape[1:]} are not at the "
                    f"latent size {x0.shape[1:4]}")
  return problems


def fit_on_records(config, model, loss_fn, fields, check, init_args, prepare_state,
                   dataset=None):
  """The training run of a method's job: this process's records (or `dataset`), an example
  batch checked by `check(example, where)`, the model planned from `init_args(example)`, the
  variables outside config.train.trainable frozen, then `fit` to config.train.num_steps (resuming
  from the workdir's last checkpoint). Returns the final TrainState."""
  from sem_repa_jax.jobs import _records
  from sem_repa_jax.training.fit import fit
  from sem_repa_jax.training.train_state import frozen_outside
  where = "the given dataset" if dataset is not None else \
      f"config.data.records = {config.data.records}"
  dataset = _records.record_dataset(config, fields) if dataset is None else dataset
  example = _records.example_batch(dataset)
  check(example, where)
  args = init_args(example)
  frozen = frozen_outside(jax.eval_shape(model.init, jax.random.key(0), *args),
                          config.train.trainable)
  state, _ = fit(config, model, loss_fn, args, dataset=dataset, frozen_prefixes=frozen,
                 prepare_state=prepare_state, num_steps=config.train.num_steps)
  return state
