"""Job encode_text: run T5 once per unique prompt of a dataset and store the embeddings.

Prompts come from a text file (one per line, blank lines skipped) or a JSONL manifest (one object per
line, the prompt in `caption_field`). Embeddings go to a sharded cache folder keyed by prompt hash
(see sem_repa_jax/models/encoders/text_cache.py); a rerun encodes only the prompts not stored yet.
Training and sampling read it with `load_text_embeddings(path).lookup(prompt)`.
"""
import hashlib
import json
import os

import numpy as np
from absl import logging

from sem_repa_jax.models.encoders.text_cache import (CacheSettings, TextEmbeddingWriter,
                                                     default_cache_path, load_text_embeddings)
from sem_repa_jax.models.encoders.tokenize import load_t5_tokenizer, tokenize

__all__ = ["run", "read_prompts", "load_text_embeddings"]
STORAGE_DTYPES = ("float32", "bfloat16", "float16")


def read_prompts(path: str, caption_field: str = "caption") -> list[str]:
  """Prompts in file order (duplicates kept); .jsonl files are manifests, anything else plain text."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"prompt file {path!r} does not exist (config.encode_text.prompts)")
  prompts = []
  with open(path, encoding="utf-8") as f:
    for lineno, line in enumerate(f, 1):
      if not line.strip():
        continue
      if not path.endswith(".jsonl"):
        prompts.append(line.rstrip("\r\n"))
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
      if not isinstance(record, dict) or caption_field not in record:
        raise ValueError(f"{path}:{lineno}: no {caption_field!r} field (set "
                         "config.encode_text.caption_field to the field holding the prompt)")
      if not isinstance(record[caption_field], str):
        raise ValueError(f"{path}:{lineno}: {caption_field!r} is "
                         f"{type(record[caption_field]).__name__}, expected a string")
      prompts.append(record[caption_field])
  return prompts


def encoder_fingerprint(text_encoder: str) -> str:
  """Identifies a converted encoder by its recipe and the bytes of its variables' metadata."""
  h = hashlib.sha256()
  for name in ("config.json", os.path.join("variables", "_METADATA")):
    p = os.path.join(text_encoder, name)
    if os.path.isfile(p):
      with open(p, "rb") as f:
        h.update(f.read())
  return h.hexdigest()[:16]


def _check(e) -> None:
  for field in ("prompts", "tokenizer", "text_encoder"):
    if not e[field]:
      raise ValueError(f"config.encode_text.{field} is empty")
  if e.storage_dtype not in STORAGE_DTYPES:
    raise ValueError(f"config.encode_text.storage_dtype {e.storage_dtype!r}: expected one of "
                     f"{STORAGE_DTYPES}")
  if e.batch_size < 1 or e.shard_size < 1 or e.max_length < 1:
    raise ValueError("config.encode_text.batch_size, shard_size and max_length must be positive")


def _storage_dtype(name: str):
  import ml_dtypes
  return np.dtype(ml_dtypes.bfloat16) if name == "bfloat16" else np.dtype(name)


def run(config) -> None:
  import jax
  import jax.numpy as jnp
  from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
  from tqdm import tqdm

  from sem_repa_jax.models.pretrained import load_pretrained

  e = config.encode_text
  _check(e)
  prompts = read_prompts(e.prompts, e.caption_field)
  if e.include_empty_prompt:
    prompts = [""] + prompts
  unique = list(dict.fromkeys(prompts))
  output = e.output or default_cache_path(e.prompts)
  settings = CacheSettings(encoder=encoder_fingerprint(e.text_encoder), max_length=e.max_length,
                           attention_mask=bool(e.attention_mask), dtype=e.storage_dtype)
  store = TextEmbeddingWriter(output, settings)
  todo = [p for p in unique if p not in store]
  logging.info("encode_text: %d prompts, %d unique, %d already in %s, %d to encode",
               len(prompts), len(unique), len(unique) - len(todo), output, len(todo))
  if not todo:
    return
  if jax.process_count() > 1:
    raise ValueError("encode_text runs on one host (it writes one cache folder); start it with "
                     "distributed.initialize=False on a single process")

  tokenizer = load_t5_tokenizer(e.tokenizer)
  devices = jax.local_devices()
  mesh = Mesh(np.asarray(devices), ("data",))
  module, variables = load_pretrained(e.text_encoder, sharding=NamedSharding(mesh, P()),
                                      cast_params_to=jnp.dtype(config.param_dtype))
  module = module.clone(dtype=jnp.dtype(config.dtype), param_dtype=jnp.dtype(config.param_dtype),
                        attention=config.attention)
  batch_size = -(-e.batch_size // len(devices)) * len(devices)
  rows = NamedSharding(mesh, P("data"))
  encode = jax.jit(lambda v, ids, mask: module.apply(v, ids, mask if e.attention_mask else None),
                   in_shardings=(None, rows, rows))
  storage = _storage_dtype(e.storage_dtype)

  with tqdm(total=len(todo), desc="encode_text", unit="prompt",
            disable=not config.get("progress_bar", True)) as bar:
    for start in range(0, len(todo), batch_size):
      batch = todo[start:start + batch_size]
      # A fixed batch shape compiles once; the filler rows are dropped.
      ids, mask, truncated = tokenize(tokenizer, batch + [""] * (batch_size - len(batch)),
                                      e.max_length)
      out = np.asarray(jax.device_get(encode(variables, ids, mask)), np.float32)
      for i, prompt in enumerate(batch):
        if truncated[i]:
          logging.warning("encode_text: prompt truncated to %d tokens: %.80r", e.max_length, prompt)
        store.add(prompt, out[i].astype(storage), int(mask[i].sum()), truncated[i])
      while store.pending >= e.shard_size:
        store.flush(e.shard_size)
      bar.update(len(batch))
  store.flush()
  logging.info("encode_text: %d prompts stored in %s", len(store.keys), output)
