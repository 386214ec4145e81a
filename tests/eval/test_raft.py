"""RAFT: torchvision's raft_large and raft_small (tests/eval/raft_reference.py) with seeded random
weights, saved as the .pth users download, converted through the CLI, flows compared; and the
converter's strictness on a state dict with a tensor too many or too few."""
import time

import jax
import numpy as np
import pytest
import torch

from conversion.mapping import ConversionError
from sem_repa_jax.models import load_pretrained
from sem_repa_jax.models.metrics.raft import RAFT, SMALL
from tests.eval import raft_reference
from tests.parity import conversion_error, convert, max_abs_error, randomize

UPDATES = 3   # torchvision's default is 12; 3 iterations exercise the same scan body


def _frames(n=2, size=(128, 136), seed=0):
  """Frame pairs in [-1, 1]: smooth patterns plus noise, the second shifted by (3, -2) pixels."""
  rng = np.random.default_rng(seed)
  yy, xx = np.meshgrid(np.linspace(-1, 1, size[0]), np.linspace(-1, 1, size[1]), indexing="ij")
  base = np.stack([np.sin(4 * xx + 3 * yy), np.cos(5 * yy), np.sin(3 * xx * yy)], -1)
  first = np.clip(base + 0.1 * rng.standard_normal((n, *size, 3)), -1, 1).astype(np.float32)
  return first, np.roll(first, (3, -2), (1, 2))


def _saved(tmp_path, name, seed):
  model = randomize(getattr(raft_reference, f"raft_{name}")().eval(), seed=seed)
  path = tmp_path / f"raft_{name}.pth"
  torch.save(model.state_dict(), path)
  return model, path


@pytest.mark.parametrize("name", ["large", "small"])
def test_raft_matches_torchvision(tmp_path, name):
  model, path = _saved(tmp_path, name, seed=1)
  module, variables = load_pretrained(convert("raft", path, tmp_path / "raft"))
  assert module.num_flow_updates == 12 and (module.config == SMALL) == (name == "small")
  first, second = _frames()
  nchw = lambda x: torch.from_numpy(x).permute(0, 3, 1, 2)
  with torch.no_grad():
    expected = model(nchw(first), nchw(second), num_flow_updates=UPDATES)[-1]
  expected = expected.permute(0, 2, 3, 1).numpy()
  start = time.time()
  got = jax.jit(module.clone(num_flow_updates=UPDATES).apply)(variables, first, second)
  print(f"raft_{name}: max abs error {max_abs_error(got, expected):.3g} px of flows up to "
        f"{np.abs(expected).max():.3g} px ({time.time() - start:.1f} s with compilation)")
  assert got.shape == expected.shape == (2, 128, 136, 2)
  np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4 * np.abs(expected).max())


def test_converter_is_strict(tmp_path):
  _, path = _saved(tmp_path, "small", seed=2)
  state = torch.load(path)
  extra = {**state, "corr_block.scale": torch.ones(1)}
  torch.save(extra, tmp_path / "extra.pth")
  conversion_error("raft", tmp_path / "extra.pth", tmp_path / "out",
                   match=r"unused source tensor 'corr_block\.scale' \(1,\): no rule maps it")
  missing = {k: v for k, v in state.items() if k != "context_encoder.layer2.0.downsample.0.bias"}
  torch.save(missing, tmp_path / "missing.pth")
  conversion_error("raft", tmp_path / "missing.pth", tmp_path / "out",
                   match=r"missing: model parameter 'params/context_encoder/layer2_0/downsample/"
                         r"conv/bias'")
  no_encoder = {k: v for k, v in state.items() if not k.startswith("feature_encoder.")}
  torch.save(no_encoder, tmp_path / "foreign.pth")
  conversion_error("raft", tmp_path / "foreign.pth", tmp_path / "out",
                   match=r"feature_encoder\.convnormrelu\.0\.weight: no such tensor; expected "
                         r"torchvision's RAFT \(64 filters: raft_large, 32 filters: raft_small\)")


def test_frame_sizes_are_checked():
  frames = np.zeros((1, 120, 128, 3), np.float32)
  with pytest.raises(ValueError, match=r"RAFT: frames of shape \(1, 120, 128, 3\); expected "
                                       r"\(B, H, W, 3\) with H and W multiples of 8 and at least 128"):
    RAFT(SMALL).init(jax.random.key(0), frames, frames)
