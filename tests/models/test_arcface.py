"""IResNet (ArcFace) parity against a PyTorch IResNet with insightface's layer structure, through
the .pth and ONNX (merged and separate BN, in-graph normalization) conversion paths."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

import jax
import jax.numpy as jnp

from conversion import arcface as conv_arcface
from conversion.safetensors_io import CheckpointError
from sem_repa_jax.models import load_pretrained
from sem_repa_jax.models.encoders.arcface import IResNet, IResNetConfig, fold_batchnorm
from tests import parity

LAYERS, WIDTHS, FEATURES, SIZE = (1, 2, 1, 2), (8, 16, 16, 32), 16, 32


# --- PyTorch reference: insightface recognition/arcface_torch/backbones/iresnet.py, with the
# widths and input size as arguments so the test model is tiny.
def conv3x3(i, o, stride=1):
  return nn.Conv2d(i, o, 3, stride, 1, bias=False)


class IBasicBlock(nn.Module):
  def __init__(self, inplanes, planes, stride=1, downsample=None):
    super().__init__()
    self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-05)
    self.conv1 = conv3x3(inplanes, planes)
    self.bn2 = nn.BatchNorm2d(planes, eps=1e-05)
    self.prelu = nn.PReLU(planes)
    self.conv2 = conv3x3(planes, planes, stride)
    self.bn3 = nn.BatchNorm2d(planes, eps=1e-05)
    self.downsample = downsample

  def forward(self, x):
    identity = x
    out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
    if self.downsample is not None:
      identity = self.downsample(x)
    return out + identity


class TorchIResNet(nn.Module):
  def __init__(self, layers, widths, num_features, input_size):
    super().__init__()
    self.inplanes = widths[0]
    self.conv1 = nn.Conv2d(3, self.inplanes, 3, 1, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(self.inplanes, eps=1e-05)
    self.prelu = nn.PReLU(self.inplanes)
    self.layer1 = self._make_layer(widths[0], layers[0])
    self.layer2 = self._make_layer(widths[1], layers[1])
    self.layer3 = self._make_layer(widths[2], layers[2])
    self.layer4 = self._make_layer(widths[3], layers[3])
    self.bn2 = nn.BatchNorm2d(widths[3], eps=1e-05)
    self.dropout = nn.Dropout(p=0, inplace=True)
    self.fc = nn.Linear(widths[3] * (input_size // 16) ** 2, num_features)
    self.features = nn.BatchNorm1d(num_features, eps=1e-05)

  def _make_layer(self, planes, blocks, stride=2):
    downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, stride, bias=False),
                               nn.BatchNorm2d(planes, eps=1e-05))
    layers = [IBasicBlock(self.inplanes, planes, stride, downsample)]
    self.inplanes = planes
    layers += [IBasicBlock(planes, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers)

  def forward(self, x):
    x = self.prelu(self.bn1(self.conv1(x)))
    x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
    x = self.fc(self.dropout(torch.flatten(self.bn2(x), 1)))
    return self.features(x)


@pytest.fixture(scope="module")
def reference():
  torch.manual_seed(0)
  model = parity.randomize(TorchIResNet(LAYERS, WIDTHS, FEATURES, SIZE), spread=0.1,
                           gain=0.5 ** 0.5).eval()
  faces = np.random.default_rng(0).uniform(-1, 1, (3, SIZE, SIZE, 3)).astype(np.float32)
  # The gradient of <w, emb> w.r.t. the faces (the HJB face step differentiates this path).
  # .contiguous(), not .clone(): a channels-last-strided input makes torch 2.13's CPU backward
  # crash (segfault) in this network.
  w = np.random.default_rng(1).standard_normal((3, FEATURES)).astype(np.float32)
  x = torch.from_numpy(faces).permute(0, 3, 1, 2).contiguous().requires_grad_(True)
  out = model(x)
  (out * torch.from_numpy(w)).sum().backward()
  return model, faces, out.detach().numpy(), (w, x.grad.permute(0, 2, 3, 1).numpy())


def _export(model, path, **kw):
  torch.onnx.export(model, torch.zeros(1, 3, SIZE, SIZE), str(path), dynamo=False, opset_version=17,
                    input_names=["input.1"], output_names=["embedding"],
                    dynamic_axes={"input.1": {0: "batch"}}, **kw)


def _ort(path, x_nchw):
  sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
  return sess.run(None, {sess.get_inputs()[0].name: x_nchw})[0]


def test_pth_parity_and_input_gradient(reference, tmp_path):
  model, faces, want, grads = reference
  torch.save(model.state_dict(), tmp_path / "backbone.pth")
  module, variables = load_pretrained(parity.convert("arcface", tmp_path / "backbone.pth",
                                                     tmp_path / "r"))
  assert module.config.layers == LAYERS and not module.config.folded
  assert module.config.input_size == SIZE and module.config.num_features == FEATURES
  assert float(jnp.max(jnp.abs(module.apply(variables, faces) - want))) <= 1e-4

  w, want_grad = grads
  # Through rematerialized, scanned blocks, as the HJB face step would run it.
  remat = type(module)(module.config, remat="dots")
  grad = jax.jit(jax.grad(lambda f: jnp.sum(remat.apply(variables, f) * w)))(faces)
  scale = float(np.max(np.abs(want_grad)))
  assert float(jnp.max(jnp.abs(grad - want_grad))) <= 1e-4 * max(1.0, scale)

  # The folded layout (conv+BN merged) computes the same function.
  cfg, folded = fold_batchnorm(module.config, variables)
  fast = type(module)(cfg)
  assert float(jnp.max(jnp.abs(fast.apply(folded, faces) - want))) <= 1e-4


@pytest.mark.parametrize("merged", [True, False], ids=["merged_bn", "separate_bn"])
def test_onnx_parity(reference, tmp_path, merged):
  model, faces, want, _ = reference
  path = tmp_path / "glint_like.onnx"
  if merged:   # PyTorch's exporter merges each conv+BN into a conv with bias (as glintr100.onnx)
    _export(model, path)
  else:        # keeps every BN node; also put mxnet-style normalization of 0..255 pixels in front
    class Normalized(nn.Module):
      def __init__(self, net):
        super().__init__()
        self.net = net

      def forward(self, x):
        return self.net((x - 127.5) * 0.0078125)
    _export(Normalized(model).eval(), path, training=torch.onnx.TrainingMode.PRESERVE,
            do_constant_folding=False)
  ops = {n.op_type for n in onnx.load(str(path)).graph.node}
  assert ("BatchNormalization" in ops) and (("Sub" in ops) != merged)

  arrays, cfg = conv_arcface.load_arrays(str(path))
  assert cfg.folded == merged and cfg.layers == LAYERS and cfg.widths == WIDTHS
  module, variables = load_pretrained(parity.convert("arcface", path, tmp_path / "onnx_r"))
  got = np.asarray(module.apply(variables, faces))
  x = np.ascontiguousarray(faces.transpose(0, 3, 1, 2))
  if merged:
    ort_out = _ort(path, x)
    assert float(np.max(np.abs(got - ort_out))) <= 1e-4
  else:
    ort_out = _ort(path, x * 127.5 + 127.5)   # the graph takes 0..255 RGB pixels
    # The graph scales by 1/128, not 1/127.5, so it differs from the torch model: compare to ORT.
    assert float(np.max(np.abs(got - ort_out))) <= 1e-4
    assert cfg.input_scale == pytest.approx(127.5 / 128) and cfg.input_shift == pytest.approx(0)
  if merged:
    assert float(np.max(np.abs(got - want))) <= 1e-4


def test_onnx_strictness(reference, tmp_path):
  model, _, _, _ = reference
  path = tmp_path / "m.onnx"
  _export(model, path)
  m = onnx.load(str(path))
  m.graph.initializer.append(onnx.numpy_helper.from_array(np.zeros(3, np.float32), "stray"))
  onnx.save(m, str(tmp_path / "extra.onnx"))
  parity.conversion_error("arcface", tmp_path / "extra.onnx", tmp_path / "out",
                          match="unused initializer 'stray'")

  m = onnx.load(str(path))
  conv = next(n for n in m.graph.node if n.op_type == "Conv")
  next(a for a in conv.attribute if a.name == "strides").ints[:] = [2, 2]
  onnx.save(m, str(tmp_path / "stride.onnx"))
  parity.conversion_error("arcface", tmp_path / "stride.onnx", tmp_path / "out",
                          error=CheckpointError,
                          match=r"\(stem\) has strides=\[2, 2\], expected \[1, 1\]")

  sd = {k: v for k, v in model.state_dict().items() if k != "layer2.1.conv2.weight"}
  torch.save(sd, tmp_path / "partial.pth")
  parity.conversion_error("arcface", tmp_path / "partial.pth", tmp_path / "out",
                          match="layer2_rest/conv2/conv/kernel")


def test_bfloat16_keeps_running_statistics_float32(reference, tmp_path):
  model, faces, want, _ = reference
  torch.save(model.state_dict(), tmp_path / "backbone.pth")
  dst = parity.convert("arcface", tmp_path / "backbone.pth", tmp_path / "bf16", dtype="bfloat16")
  module, variables = load_pretrained(dst)
  dtypes = lambda tree: {str(x.dtype) for x in jax.tree_util.tree_leaves(tree)}
  assert dtypes(variables["params"]) == {"bfloat16"}
  assert dtypes(variables["batch_stats"]) == {"float32"}
  got = np.asarray(module.apply(variables, faces), np.float32)
  rel = np.abs(got - want).max() / np.abs(want).max()
  print(f"ArcFace bf16 weights: max abs err relative to output max {rel:.3e}")
  assert rel < 0.05


def test_unrolled_blocks_same_function():
  # Unrolling keeps the stacked parameter layout of the scan and computes the same function.
  cfg = IResNetConfig(layers=(1, 3, 1, 1), widths=(8, 8, 16, 16), num_features=8, input_size=16)
  faces = jax.random.uniform(jax.random.PRNGKey(1), (2, 16, 16, 3), minval=-1.0, maxval=1.0)
  # Random values into the abstract tree: compiling `init` would cost more than the test itself.
  rng = np.random.default_rng(0)
  shapes = jax.eval_shape(IResNet(cfg).init, jax.random.PRNGKey(0), faces)
  variables = jax.tree_util.tree_map(
      lambda a: jnp.asarray(rng.uniform(0.5, 1.0, a.shape) * 0.3, a.dtype), shapes)
  want = jax.jit(IResNet(cfg).apply)(variables, faces)
  got = jax.jit(IResNet(cfg, unroll=True).apply)(variables, faces)
  assert float(jnp.max(jnp.abs(got - want))) <= 1e-5 * max(1.0, float(jnp.max(jnp.abs(want))))
