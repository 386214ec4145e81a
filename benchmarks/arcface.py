"""Faces/s of the Flax IResNet vs onnxruntime (and PyTorch eager) on CPU.

A random-weight insightface IResNet is built in PyTorch, exported to ONNX as the public files are
(conv+BN merged), converted with `conversion.arcface`, and all three run the same batch, in turns
(benchmarks/harness.py: medians, min/max, load average).

  python -m benchmarks.arcface [--depth 50] [--batch 16] [--iters 5]

JAX runs at its default matmul precision (nothing here changes it; the tests' 'highest' is set in
tests/conftest.py only). XLA:CPU flags, if any, come from the XLA_FLAGS environment variable and
are printed. On a shared machine the ratio moves with the load (printed): onnxruntime's spinning
thread pool loses more than XLA's when the cores are oversubscribed, so compare runs at similar load.
"""
import argparse
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import harness  # noqa: E402


def torch_iresnet(depth, widths=(64, 128, 256, 512), num_features: int = 512,
                  input_size: int = 112):
  """insightface recognition/arcface_torch/backbones/iresnet.py (eval mode), random weights;
  depth: 18 | 34 | 50 | 100 | 200 or the blocks per stage; widths and input_size as arguments for
  reduced models (benchmarks/hjb.py)."""
  import torch
  from torch import nn
  from sem_repa_jax.models.encoders.arcface import DEPTHS

  class Block(nn.Module):
    def __init__(self, cin, cout, stride):
      super().__init__()
      self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
      self.bn2, self.prelu = nn.BatchNorm2d(cout), nn.PReLU(cout)
      self.conv2 = nn.Conv2d(cout, cout, 3, stride, 1, bias=False)
      self.bn3 = nn.BatchNorm2d(cout)
      self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                      nn.BatchNorm2d(cout)) if stride != 1 else None

    def forward(self, x):
      out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
      return out + (self.downsample(x) if self.downsample is not None else x)

  class Net(nn.Module):
    def __init__(self, layers):
      super().__init__()
      self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
      self.bn1, self.prelu = nn.BatchNorm2d(widths[0]), nn.PReLU(widths[0])
      cin, stages = widths[0], []
      for n, w in zip(layers, widths):
        stages.append(nn.Sequential(Block(cin, w, 2), *[Block(w, w, 1) for _ in range(n - 1)]))
        cin = w
      self.layer1, self.layer2, self.layer3, self.layer4 = stages
      self.bn2 = nn.BatchNorm2d(widths[-1])
      self.fc = nn.Linear(widths[-1] * (input_size // 16) ** 2, num_features)
      self.features = nn.BatchNorm1d(num_features)

    def forward(self, x):
      x = self.prelu(self.bn1(self.conv1(x)))
      x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
      return self.features(self.fc(torch.flatten(self.bn2(x), 1)))

  net = Net(DEPTHS[depth] if isinstance(depth, int) else tuple(depth))
  g = torch.Generator().manual_seed(0)
  with torch.no_grad():
    for m in net.modules():
      if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
        m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
  return net.eval()


def main(argv=None):
  p = argparse.ArgumentParser()
  p.add_argument("--depth", type=int, default=50)
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--iters", type=int, default=5)
  args = p.parse_args(argv)

  import jax
  import jax.numpy as jnp
  import onnxruntime as ort
  import torch
  from conversion import arcface as conv_arcface
  from sem_repa_jax.models import load_pretrained

  net = torch_iresnet(args.depth)
  x = np.random.default_rng(0).uniform(-1, 1, (args.batch, 112, 112, 3)).astype(np.float32)
  x_nchw = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
  with tempfile.TemporaryDirectory() as tmp:
    onnx_path = os.path.join(tmp, f"r{args.depth}.onnx")
    torch.onnx.export(net, torch.zeros(1, 3, 112, 112), onnx_path, dynamo=False, opset_version=17,
                      input_names=["input.1"], output_names=["embedding"],
                      dynamic_axes={"input.1": {0: "batch"}})
    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    dst = conv_arcface.convert(onnx_path, os.path.join(tmp, "converted"))
    module, variables = load_pretrained(dst)
    pth = os.path.join(tmp, "backbone.pth")
    torch.save(net.state_dict(), pth)
    unfolded_module, unfolded_vars = load_pretrained(
        conv_arcface.convert(pth, os.path.join(tmp, "converted_pth")))

  apply = jax.jit(module.apply)
  apply_unrolled = jax.jit(module.clone(unroll=True).apply)
  apply_unfolded = jax.jit(unfolded_module.apply)
  xj = jnp.asarray(x)
  ort_out = sess.run(None, {"input.1": x_nchw})[0]
  err = float(np.max(np.abs(np.asarray(apply(variables, xj)) - ort_out)))
  with torch.no_grad():
    torch_out = net(torch.from_numpy(x_nchw)).numpy()
  err_pth = float(np.max(np.abs(np.asarray(apply_unfolded(unfolded_vars, xj)) - torch_out)))

  def torch_run():
    with torch.no_grad():
      net(torch.from_numpy(x_nchw))

  res = harness.alternate({
      "ort": lambda: sess.run(None, {"input.1": x_nchw}),
      "jax": lambda: apply(variables, xj),
      "jax_r": lambda: apply_unrolled(variables, xj),
      "jax_u": lambda: apply_unfolded(unfolded_vars, xj),
      "torch": torch_run}, repeats=args.iters)
  t_ort, t_jax, t_jax_r, t_jax_u, t_torch = (res[k].median for k in
                                             ("ort", "jax", "jax_r", "jax_u", "torch"))
  b = args.batch
  print(f"IResNet-{args.depth}, batch {b}, 112x112, CPU ({os.cpu_count()} cores), "
        f"jax {jax.__version__}, onnxruntime {ort.__version__}, torch {torch.__version__}")
  print(harness.table(res, baseline="ort", title="seconds per batch (A B A B ... medians)"))
  print(f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; "
        f"jax_default_matmul_precision={jax.config.jax_default_matmul_precision}")
  print(f"max |jax - onnxruntime| {err:.2e} (merged BN); max |jax - torch| {err_pth:.2e} (.pth)")
  print(f"onnxruntime          {b / t_ort:8.1f} faces/s  ({t_ort * 1e3:.0f} ms/batch)")
  print(f"jax (merged BN)      {b / t_jax:8.1f} faces/s  ({t_jax * 1e3:.0f} ms/batch)")
  print(f"jax (merged, unroll) {b / t_jax_r:8.1f} faces/s  ({t_jax_r * 1e3:.0f} ms/batch)")
  print(f"jax (.pth, BN nodes) {b / t_jax_u:8.1f} faces/s  ({t_jax_u * 1e3:.0f} ms/batch)")
  print(f"torch eager          {b / t_torch:8.1f} faces/s  ({t_torch * 1e3:.0f} ms/batch)")
  print(f"ratio jax/onnxruntime {t_ort / t_jax:.2f}x (unrolled {t_ort / t_jax_r:.2f}x, .pth "
        f"{t_ort / t_jax_u:.2f}x)   jax/torch {t_torch / t_jax:.2f}x")


if __name__ == "__main__":
  main()
