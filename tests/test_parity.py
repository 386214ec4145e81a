"""The parity harness itself (tests/parity.py): what it randomizes, what it writes, how it fails."""
import json

import numpy as np
import pytest
import torch
from torch import nn

from conversion.safetensors_io import SafetensorsCheckpoint
from tests import parity


class _Net(nn.Module):
  def __init__(self):
    super().__init__()
    self.proj = nn.Linear(6, 4)
    self.norm = nn.LayerNorm(4)
    self.bn = nn.BatchNorm1d(4)
    self.register_buffer("table", torch.zeros(3))


def test_randomize_moves_norms_off_their_init_and_only_them_when_asked():
  net, init = _Net(), _Net()
  init.load_state_dict(net.state_dict())
  parity.randomize(net, seed=3, norms_only=True, buffers={"table": 0.5})
  assert torch.equal(net.proj.weight, init.proj.weight)
  assert torch.equal(net.proj.bias, init.proj.bias)
  ones, zeros = torch.ones(4), torch.zeros(4)
  for scale in (net.norm.weight, net.bn.weight, net.bn.running_var):
    assert not torch.allclose(scale, ones) and (scale > 0).all()
  for shift in (net.norm.bias, net.bn.bias, net.bn.running_mean):
    assert not torch.allclose(shift, zeros)
  assert net.table.abs().max() > 0

  again = parity.randomize(_Net(), seed=3, norms_only=True)
  assert torch.equal(again.norm.weight, net.norm.weight)   # the seed alone decides the draws
  full = parity.randomize(_Net(), seed=3, gain=2.0)
  assert abs(float(full.proj.weight.detach().std()) - 2.0 / np.sqrt(6)) < 0.6
  assert not torch.equal(full.proj.bias, init.proj.bias)


def test_write_folder_shards_with_an_index_the_converter_reads(tmp_path):
  (tmp_path / "cfg").mkdir()
  (tmp_path / "cfg" / "config.json").write_text("{}")
  state = {f"w{i}": np.full((2, i + 1), i, np.float32) for i in range(5)}
  folder = parity.write_folder(state, tmp_path / "m", config_from=tmp_path / "cfg", shards=2)
  index = json.loads((tmp_path / "m" / "model.safetensors.index.json").read_text())
  assert sorted(set(index["weight_map"].values())) == ["model-00001-of-00002.safetensors",
                                                       "model-00002-of-00002.safetensors"]
  ckpt = SafetensorsCheckpoint(folder)
  assert len(ckpt.files()) == 2
  for k, v in state.items():
    np.testing.assert_array_equal(ckpt.get(k), v)
  edited = parity.edited_copy(folder, tmp_path / "e", lambda s: s.pop("w0"))
  assert sorted(parity.read_folder(edited)) == ["w1", "w2", "w3", "w4"]


def test_convert_reports_the_cli_error(tmp_path):
  with pytest.raises(AssertionError, match="no such file or directory|missing"):
    parity.convert("t5-encoder", tmp_path / "nothing", tmp_path / "out")
