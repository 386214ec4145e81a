"""What every training job on annotated records shares: this process's shard of the records as a
grain dataset of batches, and the example batch that plans the train state.

Config fields read here: config.data.{records, batch_size, seed, prefetch} (configs/semrepa.py,
configs/stableanimator.py).
"""
import jax
import jax.numpy as jnp


def record_dataset(config, keys, shard_index: int | None = None, shard_count: int | None = None):
  """This process's shard of the annotated records: shuffled, repeated, batched, checkpointable,
  read config.data.prefetch batches ahead; each batch holds the record fields `keys`.

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
                           shard_index=shard_index, shard_count=n, keys=list(keys))
  return loader.Prefetched(ds.map(loader.numpy_batch), d.prefetch)


def example_batch(dataset):
  """Zeros shaped like one example of the dataset's first batch (batch dimension 1)."""
  return jax.tree.map(lambda x: jnp.zeros((1,) + x.shape[1:], x.dtype), dataset[0])
