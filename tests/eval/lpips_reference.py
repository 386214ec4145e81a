"""The PyTorch LPIPS of the `lpips` package (v0.1, lpips=True), written from its source and
torchvision's AlexNet / VGG16 `features` (neither package imports beside our torch build):
ScalingLayer, the tapped ReLUs, unit-normalized feature differences, the NetLinLayer heads
(Dropout + 1x1 conv without bias: keys lin{k}.model.1.weight), spatial mean, sum."""
import torch
from torch import nn

ALEX = [(3, 64, 11, 4, 2), "M", (64, 192, 5, 1, 2), "M", (192, 384, 3, 1, 1), (384, 256, 3, 1, 1),
        (256, 256, 3, 1, 1), "M"]
VGG16 = [(3, 64), (64, 64), "M", (64, 128), (128, 128), "M", (128, 256), (256, 256), (256, 256),
         "M", (256, 512), (512, 512), (512, 512), "M", (512, 512), (512, 512), (512, 512), "M"]
# lpips slices features into five parts ending at these Sequential indices (exclusive).
SLICES = {"alex": (2, 5, 8, 10, 12), "vgg": (4, 9, 16, 23, 30)}


def torchvision_features(net: str) -> nn.Sequential:
  layers = []
  for spec in ALEX if net == "alex" else VGG16:
    if spec == "M":
      layers.append(nn.MaxPool2d(3 if net == "alex" else 2, 2))
    else:
      cin, cout, k, s, p = spec if net == "alex" else (*spec, 3, 1, 1)
      layers += [nn.Conv2d(cin, cout, k, s, p), nn.ReLU(inplace=False)]
  return nn.Sequential(*layers)


class NetLinLayer(nn.Module):
  def __init__(self, chn):
    super().__init__()
    self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(chn, 1, 1, bias=False))


class TorchLPIPS(nn.Module):
  def __init__(self, net: str):
    super().__init__()
    self.net = net
    self.features = torchvision_features(net)
    chns = (64, 192, 384, 256, 256) if net == "alex" else (64, 128, 256, 512, 512)
    for k, c in enumerate(chns):
      setattr(self, f"lin{k}", NetLinLayer(c))
    self.register_buffer("shift", torch.tensor([-.030, -.088, -.188])[None, :, None, None])
    self.register_buffer("scale", torch.tensor([.458, .448, .450])[None, :, None, None])

  def forward(self, x0, x1):   # NCHW in [-1, 1]
    outs = []
    for x in (x0, x1):
      x = (x - self.shift) / self.scale
      taps, start = [], 0
      for end in SLICES[self.net]:
        for layer in self.features[start:end]:
          x = layer(x)
        taps.append(x)
        start = end
      outs.append(taps)
    total = 0
    for k, (f0, f1) in enumerate(zip(*outs)):
      n0 = f0 / (torch.sqrt(torch.sum(f0 ** 2, dim=1, keepdim=True)) + 1e-10)
      n1 = f1 / (torch.sqrt(torch.sum(f1 ** 2, dim=1, keepdim=True)) + 1e-10)
      total = total + getattr(self, f"lin{k}").model((n0 - n1) ** 2).mean([2, 3], keepdim=True)
    return total.reshape(-1)

  def save_as_users_have(self, folder, classifier: bool = True):
    """torchvision backbone file (features.* [+ classifier.*]) and lpips heads file, as shipped."""
    sd = self.state_dict()
    backbone = {k: v for k, v in sd.items() if k.startswith("features.")}
    if classifier:   # torchvision files hold the classifier too; LPIPS never reads it
      backbone["classifier.1.weight"] = torch.randn(16, 8)
      backbone["classifier.1.bias"] = torch.randn(16)
    heads = {k: v for k, v in sd.items() if k.startswith("lin")}
    names = ("alexnet-owt-7be5be79.pth", "alex.pth") if self.net == "alex" else \
        ("vgg16-397923af.pth", "vgg.pth")
    torch.save(backbone, f"{folder}/{names[0]}")
    torch.save(heads, f"{folder}/{names[1]}")
    return [f"{folder}/{n}" for n in names]
