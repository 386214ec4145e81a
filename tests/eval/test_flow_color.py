"""The Middlebury colour wheel of eval/flow_color.py against torchvision.utils.flow_to_image
(written out in tests/eval/raft_reference.py): the same uint8 images, bit for bit."""
import numpy as np
import pytest
import torch

from sem_repa_jax.eval.flow_color import COLORWHEEL, flow_to_image
from tests.eval.raft_reference import _make_colorwheel, flow_to_image as torch_flow_to_image


def _flows(n=3, h=48, w=64, seed=0):
  """Smooth rotating fields of per-image scale plus noise, and an exactly still image."""
  rng = np.random.default_rng(seed)
  yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
  field = np.stack([-yy, xx], -1)[None] * rng.uniform(0.5, 30, (n, 1, 1, 1))
  flows = field + rng.standard_normal((n, h, w, 2))
  return np.concatenate([flows, np.zeros((1, h, w, 2))]).astype(np.float32)


def test_colorwheel_is_torchvisions():
  np.testing.assert_array_equal(COLORWHEEL, _make_colorwheel().numpy())


def test_flow_to_image_equals_torchvision_per_image():
  flows = _flows()
  ours = np.asarray(flow_to_image(flows))
  for i, flow in enumerate(flows):   # torchvision on one flow: normalized by its own largest norm
    expected = torch_flow_to_image(torch.from_numpy(flow).permute(2, 0, 1)).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(ours[i], expected, err_msg=f"flow {i}")
  assert (ours[-1] == 255).all()   # no motion is white
  with pytest.raises(ValueError, match=r"expected flow \(..., H, W, 2\); got shape \(4, 4, 3\)"):
    flow_to_image(np.zeros((4, 4, 3)))
