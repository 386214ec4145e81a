"""What the SemanticREPA jobs (align = stage 1, finetune = stage 2, demo) share: the record dataset
and the exports of a trained stage. The networks come from methods/semrepa/factory.py, the driver
is training/fit.py.

Config fields read here are documented in configs/semrepa.py.
"""
import os

import jax
import jax.numpy as jnp

from sem_repa_jax.methods.semrepa import factory
from sem_repa_jax.models.pretrained import save_pretrained
from sem_repa_jax.training.checkpoint import restore_variables

# Record keys the training steps read (docs/data.md); everything else stays on the host.
BATCH_KEYS = ("video_latents", "depth_latents", "image_latents", "face_embeds", "face_present")
ALIGNMENT_DIRNAME = "alignment_modules"


def record_dataset(config, shard_index: int | None = None, shard_count: int | None = None):
  """This process's shard of the annotated records: shuffled, repeated, batched, checkpointable,
  read config.data.prefetch batches ahead.

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
  return loader.Prefetched(ds.map(loader.numpy_batch), d.prefetch)


def example_batch(dataset):
  return jax.tree.map(lambda x: jnp.zeros((1,) + x.shape[1:], x.dtype), dataset[0])


def export_alignment_modules(config, state) -> str:
  """Writes the trained SAM and IDM as a load_pretrained folder: <workdir>/alignment_modules."""
  kwargs = factory.module_kwargs(config, with_backbone=False)
  variables = jax.device_get(state.variables())
  dst = os.path.join(config.workdir, ALIGNMENT_DIRNAME)
  if jax.process_index() == 0:
    save_pretrained(dst, kind="semrepa-alignment", module_kwargs=kwargs, variables=variables,
                    source=os.path.abspath(config.workdir))
  return dst


def export_backbone(config, dst: str, ema: bool = False) -> str:
  """Writes the CogVideoX transformer of a stage-2 workdir's last checkpoint (its EMA with `ema`)
  as a load_pretrained folder of the kind the CogVideoX converter writes, so that
  `model.pretrained_transformer = dst` starts another stage 2 from it."""
  step, variables = restore_variables(config.workdir, ema=ema)
  backbone = {col: tree["transformer"] for col, tree in variables.items()
              if isinstance(tree, dict) and "transformer" in tree}
  if "params" not in backbone:
    raise ValueError(f"{config.workdir}/checkpoints/{step} holds no transformer: not a stage-2 run")
  if jax.process_index() == 0:
    save_pretrained(dst, kind="cogvideox-transformer", module_kwargs=factory.backbone_kwargs(config),
                    variables=backbone,
                    source=f"{os.path.abspath(config.workdir)} step {step}{' (EMA)' if ema else ''}")
  return dst
