"""A store of precomputed T5 prompt embeddings, keyed by the SHA-256 of the prompt text.

Layout: a folder (by default next to the prompt file, `<stem>.t5_embeddings/`) of safetensors shards
`embeddings-00000.safetensors`, ... Each shard maps sha256(prompt) hex -> (max_length, d_model) array
and carries metadata: the encoder's fingerprint, max_length, whether the attention mask was used, the
storage dtype, and {hash: {prompt, num_tokens, truncated}}. A shard is written under a temporary
name and renamed, so the folder only ever holds whole shards; an interrupted run loses only the
prompts not yet flushed, and a rerun skips every prompt already stored. Shards written with another
encoder or settings are refused, so embeddings never silently mix.
"""
import hashlib
import json
import os
import re
from dataclasses import dataclass

import numpy as np

FORMAT = "sem_repa_jax/t5-text-embeddings/1"
_SHARD = re.compile(r"embeddings-(\d{5})\.safetensors")


class TextCacheError(ValueError):
  """A cache folder that does not match the requested settings, or a prompt that is not stored."""


def prompt_key(prompt: str) -> str:
  return hashlib.sha256(prompt.encode("utf-8")).hexdigest()


def default_cache_path(prompts_file: str) -> str:
  stem, _ = os.path.splitext(os.path.abspath(prompts_file))
  return stem + ".t5_embeddings"


def _shards(path: str) -> list[str]:
  if not os.path.isdir(path):
    return []
  return sorted(os.path.join(path, f) for f in os.listdir(path) if _SHARD.fullmatch(f))


def _metadata(shard: str) -> dict:
  from safetensors import safe_open
  try:
    with safe_open(shard, framework="np") as f:
      meta = dict(f.metadata() or {})
  except Exception as e:   # safetensors raises its own error types for corrupt headers
    raise TextCacheError(f"{shard}: not a readable safetensors shard: {e}") from e
  if meta.get("format") != FORMAT:
    raise TextCacheError(f"{shard}: format {meta.get('format')!r}, expected {FORMAT!r}")
  return meta


@dataclass(frozen=True)
class CacheSettings:
  """What the embeddings depend on; every shard of a folder must agree on all of it."""
  encoder: str            # fingerprint of the converted encoder folder
  max_length: int
  attention_mask: bool
  dtype: str              # storage dtype: float32, bfloat16, float16

  def as_metadata(self) -> dict:
    return {"format": FORMAT, "encoder": self.encoder, "max_length": str(self.max_length),
            "attention_mask": str(self.attention_mask).lower(), "dtype": self.dtype}


class TextEmbeddingWriter:
  """Appends shards to a cache folder; `keys` already holds everything stored before."""

  def __init__(self, path: str, settings: CacheSettings):
    self.path = os.path.abspath(path)
    self.settings = settings
    self.keys: set[str] = set()
    want = settings.as_metadata()
    for shard in _shards(self.path):
      meta = _metadata(shard)
      diff = {k: (meta.get(k), v) for k, v in want.items() if meta.get(k) != v}
      if diff:
        raise TextCacheError(
            f"{shard} was written with other settings (stored, requested): {diff}; use another "
            f"output folder or delete {self.path} to recompute")
      self.keys.update(json.loads(meta["prompts"]))
    self._pending: dict[str, tuple[np.ndarray, dict]] = {}

  def __contains__(self, prompt: str) -> bool:
    return prompt_key(prompt) in self.keys

  def add(self, prompt: str, embedding: np.ndarray, num_tokens: int, truncated: bool) -> None:
    key = prompt_key(prompt)
    if key in self.keys or key in self._pending:
      return
    self._pending[key] = (np.ascontiguousarray(embedding),
                          {"prompt": prompt, "num_tokens": int(num_tokens),
                           "truncated": bool(truncated)})

  @property
  def pending(self) -> int:
    return len(self._pending)

  def flush(self, max_items: int = 0) -> None:
    """Writes pending embeddings (all, or the first max_items) as one new shard, atomically."""
    if not self._pending:
      return
    items = list(self._pending.items())
    n = max_items or len(items)
    chunk, self._pending = dict(items[:n]), dict(items[n:])
    self._write_shard(chunk)
    self.keys.update(chunk)

  def _write_shard(self, chunk: dict) -> None:
    from safetensors.numpy import save_file
    os.makedirs(self.path, exist_ok=True)
    existing = [int(_SHARD.fullmatch(os.path.basename(s)).group(1)) for s in _shards(self.path)]
    name = f"embeddings-{max(existing, default=-1) + 1:05d}.safetensors"
    meta = dict(self.settings.as_metadata(),
                prompts=json.dumps({k: info for k, (_, info) in chunk.items()}))
    tmp = os.path.join(self.path, f".{name}.tmp-{os.getpid()}")
    try:
      save_file({k: arr for k, (arr, _) in chunk.items()}, tmp, metadata=meta)
      os.replace(tmp, os.path.join(self.path, name))
    except BaseException:
      if os.path.exists(tmp):
        os.remove(tmp)
      raise


class TextEmbeddings:
  """Read side: `emb.lookup(prompt) -> (max_length, d_model)` array in the storage dtype."""

  def __init__(self, path: str):
    from safetensors import safe_open
    shards = _shards(path)
    if not shards:
      raise TextCacheError(f"{path}: no embeddings-*.safetensors shards (run the encode_text job)")
    self.path = path
    self.info: dict[str, dict] = {}
    self._handles: dict[str, tuple] = {}
    settings = None
    for shard in shards:
      meta = _metadata(shard)
      these = {k: v for k, v in meta.items() if k != "prompts"}
      if settings is not None and these != settings:
        raise TextCacheError(f"{shard}: settings {these} differ from the other shards' {settings}")
      settings = these
      handle = safe_open(shard, framework="np")
      for key, info in json.loads(meta["prompts"]).items():
        if key in self.info:
          raise TextCacheError(f"{path}: prompt {info['prompt']!r} is stored in two shards "
                               f"({self._handles[key][0]} and {shard})")
        self.info[key] = info
        self._handles[key] = (shard, handle)
    self.settings = settings

  def __len__(self) -> int:
    return len(self.info)

  def __contains__(self, prompt: str) -> bool:
    return prompt_key(prompt) in self.info

  def prompts(self) -> list[str]:
    return [i["prompt"] for i in self.info.values()]

  def num_tokens(self, prompt: str) -> int:
    return self.info[self._key(prompt)]["num_tokens"]

  def _key(self, prompt: str) -> str:
    key = prompt_key(prompt)
    if key not in self.info:
      shown = prompt if len(prompt) <= 80 else prompt[:77] + "..."
      raise TextCacheError(f"{self.path}: prompt {shown!r} (sha256 {key[:12]}...) is not stored; "
                           "run the encode_text job on a prompt file that contains it")
    return key

  def lookup(self, prompt: str) -> np.ndarray:
    key = self._key(prompt)
    return self._handles[key][1].get_tensor(key)


def load_text_embeddings(path: str) -> TextEmbeddings:
  return TextEmbeddings(path)
