import json
import os

import ml_dtypes
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from conversion import mapping
from conversion.mapping import ConversionError, DictSource, Rule
from conversion.safetensors_io import CheckpointError, SafetensorsCheckpoint

RULES = [
    Rule(r"blocks\.(\d+)\.proj\.weight", "params/blocks/proj/kernel", mapping.linear, stack="1"),
    Rule(r"blocks\.(\d+)\.proj\.bias", "params/blocks/proj/bias", stack="1"),
    Rule(r"head\.weight", "params/head/kernel", mapping.conv2d),
]
TARGET = {"params/blocks/proj/kernel": (2, 4, 3), "params/blocks/proj/bias": (2, 3),
          "params/head/kernel": (1, 1, 3, 5)}


def _source(**drop):
  r = np.random.default_rng(0)
  arrays = {f"blocks.{i}.proj.weight": r.standard_normal((3, 4)).astype(np.float32) for i in range(2)}
  arrays.update({f"blocks.{i}.proj.bias": r.standard_normal(3).astype(np.float32) for i in range(2)})
  arrays["head.weight"] = r.standard_normal((5, 3, 1, 1)).astype(np.float32)
  return arrays


def test_stacked_layers_and_layouts():
  arrays = _source()
  out = mapping.convert(DictSource(arrays), RULES, TARGET)
  np.testing.assert_array_equal(out["params/blocks/proj/kernel"][1], arrays["blocks.1.proj.weight"].T)
  np.testing.assert_array_equal(out["params/head/kernel"][0, 0], arrays["head.weight"][:, :, 0, 0].T)


def test_all_problems_reported_together():
  arrays = _source()
  del arrays["blocks.1.proj.bias"]
  arrays["extra.weight"] = np.zeros(2, np.float32)
  arrays["head.weight"] = np.zeros((5, 2, 1, 1), np.float32)
  target = dict(TARGET, **{"params/norm/scale": (3,)})
  with pytest.raises(ConversionError) as e:
    mapping.convert(DictSource(arrays), RULES, target, src_name="ckpt")
  msg = str(e.value)
  assert "unused source tensor 'extra.weight'" in msg
  assert "missing [1]" in msg
  assert "shape mismatch: source 'head.weight'" in msg
  assert "missing: model parameter 'params/norm/scale'" in msg
  assert len(e.value.problems) == 4


def test_safetensors_sharded_bf16_roundtrip(tmp_path):
  a = torch.randn(4, 6).to(torch.bfloat16)
  b = torch.randn(3)
  save_file({"a": a}, str(tmp_path / "model-00001-of-00002.safetensors"))
  save_file({"b": b}, str(tmp_path / "model-00002-of-00002.safetensors"))
  with open(tmp_path / "model.safetensors.index.json", "w") as f:
    json.dump({"weight_map": {"a": "model-00001-of-00002.safetensors",
                              "b": "model-00002-of-00002.safetensors"}}, f)
  ck = SafetensorsCheckpoint(str(tmp_path))
  assert ck.get("a").dtype == ml_dtypes.bfloat16
  np.testing.assert_array_equal(ck.get("a").astype(np.float32), a.float().numpy())
  np.testing.assert_array_equal(ck.get("b"), b.numpy())


def test_truncated_safetensors_names_the_file(tmp_path):
  path = tmp_path / "model.safetensors"
  save_file({"a": torch.randn(64, 64)}, str(path))
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) - 100)
  with pytest.raises(CheckpointError, match="model.safetensors.*truncated"):
    SafetensorsCheckpoint(str(tmp_path))


def test_a_transform_that_cannot_apply_is_reported_not_raised():
  rules = [Rule(r"w", "params/w", lambda x: x.reshape(3, 3))]
  with pytest.raises(ConversionError, match="'w' \\(4,\\) cannot be transformed"):
    mapping.convert(DictSource({"w": np.zeros(4, np.float32)}), rules, {"params/w": (3, 3)})
