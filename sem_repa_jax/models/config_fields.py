"""Model configs from the JSON a saved folder records: a field the config class does not have is an
error naming it (a folder from another model, or a newer version), never silently dropped."""
import dataclasses


def from_fields(cls, values: dict, what: str):
  """`cls(**values)` for a config dataclass, after checking every key is one of its fields."""
  fields = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(values) - fields)
  if unknown:
    raise ValueError(f"{what} config has unknown fields {unknown}; expected some of "
                     f"{sorted(fields)}")
  return cls(**values)
