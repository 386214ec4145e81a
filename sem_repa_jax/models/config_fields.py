"""Model configs from the JSON a saved folder records: a field the config class does not have is an
error naming it (a folder from another model, or a newer version), never silently dropped. Also the
checks U-Net configs share (per-block integers, block types, GroupNorm widths)."""
import dataclasses

from sem_repa_jax.nn.attention import IMPLEMENTATIONS
from sem_repa_jax.nn.stacking import REMAT_POLICIES


def from_fields(cls, values: dict, what: str):
  """`cls(**values)` for a config dataclass, after checking every key is one of its fields."""
  fields = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(values) - fields)
  if unknown:
    raise ValueError(f"{what} config has unknown fields {unknown}; expected some of "
                     f"{sorted(fields)}")
  return cls(**values)


def unet_block_problems(config, per_block, block_types: dict, groups: int) -> list:
  """Normalizes a frozen U-Net config in place, returning what it cannot take: block types and
  block_out_channels become tuples; each field in `per_block` one int per block (one int given:
  every block); block_types {field: allowed type names}; every width a multiple of `groups`."""
  n = len(config.block_out_channels)
  set_ = lambda k, v: object.__setattr__(config, k, v)
  for k in block_types:
    set_(k, tuple(getattr(config, k)))
  set_("block_out_channels", tuple(int(c) for c in config.block_out_channels))
  problems = []
  for k in per_block:
    v = getattr(config, k)
    v = tuple((v,) * n if isinstance(v, int) else v)
    if not all(isinstance(e, int) for e in v):
      problems.append(f"{k} {list(v)}: only integers per block are ported (not per-layer lists)")
    elif len(v) != n:
      problems.append(f"{k} has {len(v)} entries for {n} blocks")
    set_(k, v)
  for k, known in block_types.items():
    unknown = [t for t in getattr(config, k) if t not in known]
    if unknown:
      problems.append(f"{k} {unknown}: ported are {list(known)}")
    if len(getattr(config, k)) != n:
      problems.append(f"{k} has {len(getattr(config, k))} entries for {n} blocks")
  odd = [c for c in config.block_out_channels if c % groups]
  if odd:
    problems.append(f"block_out_channels {odd} are not multiples of the {groups} GroupNorm groups")
  return problems


def check_attention_and_remat(attention: str, remat_policy: str) -> None:
  """A module's attention kernel and remat policy names, before anything is traced."""
  if attention not in IMPLEMENTATIONS:
    raise ValueError(f"attention {attention!r} is not one of {IMPLEMENTATIONS}")
  if remat_policy != "none" and remat_policy not in REMAT_POLICIES:
    raise ValueError(f"remat_policy {remat_policy!r}: expected 'none' or one of "
                     f"{sorted(REMAT_POLICIES)}")
