"""What the two SemanticREPA training jobs (align = stage 1, finetune = stage 2) share: building the
networks from the config, reading cached latents, and running the generic training loop.

Config fields read here are documented in configs/semrepa.py.
"""
import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from sem_repa_jax.diffusion import schedules
from sem_repa_jax.models.cogvideox.transformer import PRESETS, CogVideoXTransformerConfig
from sem_repa_jax.models.pretrained import load_pretrained, read_pretrained_config, save_pretrained
from sem_repa_jax.models.semrepa.id_alignment import IDAlignmentConfig
from sem_repa_jax.models.semrepa.model import SemanticREPA
from sem_repa_jax.models.semrepa.structure_alignment import structure_alignment_config
from sem_repa_jax.training import checkpoint, loop, mesh as mesh_lib, optimizers, sharding
from sem_repa_jax.training.metrics import MetricsWriter
from sem_repa_jax.training.train_state import make_train_state

# Record keys the training steps read (docs/data.md); everything else stays on the host.
BATCH_KEYS = ("video_latents", "depth_latents", "image_latents", "face_embeds", "face_present")
ALIGNMENT_DIRNAME = "alignment_modules"


def backbone_config(config) -> CogVideoXTransformerConfig:
  """The CogVideoX config: from the converted weights' folder when given, else preset + overrides."""
  m = config.model
  if m.pretrained_transformer:
    return CogVideoXTransformerConfig(**read_pretrained_config(m.pretrained_transformer)
                                      ["module_kwargs"]["config"])
  if m.backbone_preset not in PRESETS:
    raise ValueError(f"config.model.backbone_preset={m.backbone_preset!r}: expected one of "
                     f"{sorted(PRESETS)}")
  return dataclasses.replace(PRESETS[m.backbone_preset], **dict(m.backbone))


def identity_config(config) -> IDAlignmentConfig:
  d = dict(config.model.identity)
  d["channels"] = tuple(d["channels"])
  return IDAlignmentConfig(latent_channels=config.model.latent_channels, **d)


def module_kwargs(config, with_backbone: bool) -> dict:
  backbone = backbone_config(config)
  structure = structure_alignment_config(backbone, config.model.structure_layers,
                                         config.model.latent_channels)
  return dict(structure=dataclasses.asdict(structure),
              identity=dataclasses.asdict(identity_config(config)),
              backbone=dataclasses.asdict(backbone) if with_backbone else None,
              dtype=config.dtype, param_dtype=config.param_dtype, attention=config.attention,
              remat_policy=config.remat_policy)


def build(structure: dict, identity: dict, backbone=None, dtype="float32", param_dtype="float32",
          attention="xla", remat_policy="none") -> SemanticREPA:
  """Factory from JSON kwargs (used by save_pretrained/load_pretrained and the jobs)."""
  identity = dict(identity, channels=tuple(identity["channels"]))
  return SemanticREPA(structure=CogVideoXTransformerConfig(**structure),
                      identity=IDAlignmentConfig(**identity),
                      backbone=None if backbone is None else CogVideoXTransformerConfig(**backbone),
                      dtype=jnp.dtype(dtype), param_dtype=jnp.dtype(param_dtype),
                      attention=attention, remat_policy=remat_policy)


def alphas_cumprod(config) -> np.ndarray:
  return schedules.cogvideox_alphas_cumprod(config.diffusion.snr_shift_scale,
                                            num_train_timesteps=config.diffusion.num_train_timesteps)


def record_dataset(config, shard_index: int | None = None, shard_count: int | None = None):
  """This process's shard of the annotated records: shuffled, repeated, batched, checkpointable.

  Process i of n reads records i, i+n, i+2n, ... (in its own shuffled order) and yields
  batch_size / n of them per step; the global batch of a step is the processes' batches in process
  order. `shard_index`/`shard_count` (default: this process of jax.process_count()) name another
  process's shard, e.g. to rebuild a multi-host run's global batches on one host."""
  from data_pipelines import loader
  d = config.data
  if not d.records:
    raise ValueError("config.data.records is empty: point it at the annotation output "
                     "(<annotate workdir>/annotations/records) or a glob of *.array_record files")
  shard_index, n = loader.process_shard(shard_index, shard_count)
  if d.batch_size % n:
    raise ValueError(f"config.data.batch_size={d.batch_size} (global) is not divisible by the "
                     f"{n} processes")
  source = loader.ClipRecordSource(d.records)
  ds = loader.clip_dataset(source, seed=d.seed, batch_size=d.batch_size // n, num_epochs=None,
                           shard_index=shard_index, shard_count=n,
                           keys=list(BATCH_KEYS) + (["text_embeds"] if d.text_embeds else []))
  return ds.map(loader.numpy_batch)


def example_batch(dataset):
  return jax.tree.map(lambda x: jnp.zeros((1,) + x.shape[1:], x.dtype), dataset[0])


def train(config, model: SemanticREPA, loss_fn, init_args, *, frozen_prefixes=(),
          prepare_state=None, num_steps: int, dataset=None):
  """Builds the sharded state, restores the latest checkpoint or initializes (then calls
  `prepare_state(state) -> state` on a fresh state, e.g. to load pretrained weights), and trains
  on `dataset` (a grain dataset of this process's batches; default: `record_dataset(config)`)."""
  mesh = mesh_lib.make_mesh(config)
  rules = sharding.axis_rules(config)
  parallel = sharding.batch_sharding(mesh, rules).num_devices // int(
      np.prod([mesh.shape[a] for a in mesh.axis_names if a not in _batch_axes(rules)]))
  if config.data.batch_size % parallel:
    raise ValueError(f"config.data.batch_size={config.data.batch_size} is not divisible by the "
                     f"{parallel}-way data parallelism of mesh {dict(mesh.shape)}")
  tx, schedule = optimizers.make_optimizer(config.optimizer)
  opt = optimizers.resolve_config(config.optimizer)
  abstract, init = make_train_state(model.init, jax.random.key(config.seed), *init_args, tx=tx,
                                    mesh=mesh, rules=rules, rng=config.seed + 1,
                                    frozen_prefixes=frozen_prefixes, ema_decay=opt.ema_decay)
  data = iter(record_dataset(config) if dataset is None else dataset)
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


def export_alignment_modules(config, state) -> str:
  """Writes the trained SAM and IDM as a load_pretrained folder: <workdir>/alignment_modules."""
  kwargs = module_kwargs(config, with_backbone=False)
  variables = jax.device_get(state.variables())
  dst = os.path.join(config.workdir, ALIGNMENT_DIRNAME)
  if jax.process_index() == 0:
    save_pretrained(dst, kind="semrepa-alignment", factory="sem_repa_jax.jobs._semrepa:build",
                    module_kwargs=kwargs, variables=variables, source=os.path.abspath(config.workdir))
  return dst


def export_backbone(config, dst: str, ema: bool = False) -> str:
  """Writes the CogVideoX transformer of a stage-2 workdir's last checkpoint (its EMA with `ema`)
  as a load_pretrained folder of the kind the CogVideoX converter writes, so that
  `model.pretrained_transformer = dst` starts another stage 2 from it."""
  from conversion import cogvideox_transformer as converter
  step, variables = restore_variables(config.workdir, ema=ema)
  backbone = {col: tree["transformer"] for col, tree in variables.items()
              if isinstance(tree, dict) and "transformer" in tree}
  if "params" not in backbone:
    raise ValueError(f"{config.workdir}/checkpoints/{step} holds no transformer: not a stage-2 run")
  kwargs = {"config": dataclasses.asdict(backbone_config(config)), "dtype": config.dtype,
            "param_dtype": config.param_dtype}
  if jax.process_index() == 0:
    save_pretrained(dst, kind=converter.KIND, factory=converter.FACTORY, module_kwargs=kwargs,
                    variables=backbone,
                    source=f"{os.path.abspath(config.workdir)} step {step}{' (EMA)' if ema else ''}")
  return dst


def load_into(state, path: str, attr: str, submodule: str | None = None,
              only: tuple[str, ...] | None = None):
  """Fills `state.<attr>` ('params' or 'frozen') from a load_pretrained folder, straight into the
  state's shardings. With `submodule`, saved 'col/x' fills 'col/<submodule>/x' (a converted
  backbone inside the SemanticREPA tree); without, names must match. `only`: the top-level
  modules ('col/<module>/...') to fill, the others keep their values (e.g. the alignment modules
  into a state whose frozen arrays also hold the backbone's buffers). Within the collections it
  fills, every saved array must find its place with the same shape, and every place under the
  submodule (or the `only` modules) must be filled."""
  from flax import traverse_util
  flat = traverse_util.flatten_dict(dict(getattr(state, attr)), sep="/")

  def saved_name(k):
    if only is not None and k.split("/")[1] not in only:
      return None
    if submodule is None:
      return k
    col, name, rest = (k.split("/", 2) + ["", ""])[:3]
    return f"{col}/{rest}" if name == submodule else None
  places = {saved_name(k): k for k in flat if saved_name(k) is not None}
  collections = {name.split("/")[0] for name in places}
  elsewhere = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])

  def sharding_of(name, shape):
    if name.split("/")[0] not in collections:
      return elsewhere          # another collection of the folder (loaded into the other attr)
    if name not in places:
      raise ValueError(f"{path}: saved array {name!r} {shape} has no place in this model "
                       f"({attr}{'/' + submodule if submodule else ''})")
    target = flat[places[name]]
    if tuple(target.shape) != tuple(shape):
      raise ValueError(f"{path}: saved {name!r} has shape {tuple(shape)}, the model expects "
                       f"{tuple(target.shape)}")
    return target.sharding
  _, loaded = load_pretrained(path, sharding=sharding_of)
  loaded = traverse_util.flatten_dict(dict(loaded), sep="/")
  missing = sorted(set(places) - set(loaded))
  if missing:
    raise ValueError(f"{path} lacks {len(missing)} arrays this model needs, e.g. {missing[:5]}")
  for name, k in places.items():  # (arrays of other collections are dropped here)
    flat[k] = loaded[name].astype(flat[k].dtype)
  return state.replace(**{attr: traverse_util.unflatten_dict(flat, sep="/")})


def latest_step(workdir: str) -> int | None:
  """The last saved training step under <workdir>/checkpoints, or None (no checkpoint yet)."""
  if not os.path.isdir(os.path.join(workdir, "checkpoints")):
    return None
  return checkpoint.Checkpointer(workdir).latest_step()


def restore_variables(workdir: str, step: int | None = None, ema: bool = False) -> tuple[int, dict]:
  """(step, variables) of a stage's checkpoint: trained and frozen parts merged into one tree for
  `SemanticREPA.apply`, as host numpy arrays (for evaluation and sampling after training). With
  `ema`, the trained part is the exponential moving average (a stage run with
  optimizer.ema_decay > 0); asking for it from a checkpoint without one is an error."""
  import orbax.checkpoint as ocp
  from sem_repa_jax.training.train_state import merge
  step = latest_step(workdir) if step is None else step
  if step is None:
    raise FileNotFoundError(f"{workdir}/checkpoints holds no checkpoint: train the stage first")
  mgr = ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), "checkpoints"))
  state = mgr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
  trained = state["params"]
  if ema:
    if not state.get("ema"):
      raise ValueError(f"{workdir}/checkpoints/{step} holds no EMA of the parameters: train the "
                       "stage with optimizer.ema_decay > 0 or sample the raw parameters")
    trained = state["ema"]
  return step, jax.device_get(merge(trained, state["frozen"] or {}))
