"""torchvision's RAFT (models/optical_flow/raft.py, _utils.py) and utils.flow_to_image in PyTorch,
written out from torchvision 0.28.0's source: its wheel here is the CUDA build, whose extension does
not load beside our CPU torch (and an installed torchvision breaks transformers' image
processors), so it is not imported. Module names, hence state-dict keys, are torchvision's:
`raft_large()` / `raft_small()` load raft_large_C_T_SKHT_V2-ff5fadd5.pth / raft_small_C_T_V2 as
torchvision's builders do. Checked once against the real torchvision 0.28.0 (imported past its
extension): identical keys, and identical flows for the same weights.
"""
import torch
import torch.nn.functional as F
from torch import nn


class Conv2dNormActivation(nn.Sequential):
  """torchvision.ops.Conv2dNormActivation: conv (bias when there is no norm, unless given),
  norm, ReLU; padding (k - 1) // 2."""

  def __init__(self, cin, cout, kernel_size=3, stride=1, norm_layer=None, activation=True,
               bias=None):
    layers = [nn.Conv2d(cin, cout, kernel_size, stride, (kernel_size - 1) // 2,
                        bias=norm_layer is None if bias is None else bias)]
    if norm_layer is not None:
      layers.append(norm_layer(cout))
    if activation:
      layers.append(nn.ReLU())
    super().__init__(*layers)


class ResidualBlock(nn.Module):
  def __init__(self, cin, cout, *, norm_layer, stride=1):
    super().__init__()
    self.convnormrelu1 = Conv2dNormActivation(cin, cout, 3, stride, norm_layer, bias=True)
    self.convnormrelu2 = Conv2dNormActivation(cout, cout, 3, 1, norm_layer, bias=True)
    self.downsample = nn.Identity() if stride == 1 else Conv2dNormActivation(
        cin, cout, 1, stride, norm_layer, activation=False, bias=True)

  def forward(self, x):
    return F.relu(self.downsample(x) + self.convnormrelu2(self.convnormrelu1(x)))


class BottleneckBlock(nn.Module):
  def __init__(self, cin, cout, *, norm_layer, stride=1):
    super().__init__()
    self.convnormrelu1 = Conv2dNormActivation(cin, cout // 4, 1, 1, norm_layer, bias=True)
    self.convnormrelu2 = Conv2dNormActivation(cout // 4, cout // 4, 3, stride, norm_layer, bias=True)
    self.convnormrelu3 = Conv2dNormActivation(cout // 4, cout, 1, 1, norm_layer, bias=True)
    self.downsample = nn.Identity() if stride == 1 else Conv2dNormActivation(
        cin, cout, 1, stride, norm_layer, activation=False, bias=True)

  def forward(self, x):
    y = self.convnormrelu3(self.convnormrelu2(self.convnormrelu1(x)))
    return F.relu(self.downsample(x) + y)


class FeatureEncoder(nn.Module):
  def __init__(self, *, block, layers, norm_layer, strides=(2, 1, 2, 2)):
    super().__init__()
    self.convnormrelu = Conv2dNormActivation(3, layers[0], 7, strides[0], norm_layer, bias=True)
    two = lambda cin, cout, s: nn.Sequential(block(cin, cout, norm_layer=norm_layer, stride=s),
                                             block(cout, cout, norm_layer=norm_layer, stride=1))
    self.layer1 = two(layers[0], layers[1], strides[1])
    self.layer2 = two(layers[1], layers[2], strides[2])
    self.layer3 = two(layers[2], layers[3], strides[3])
    self.conv = nn.Conv2d(layers[3], layers[4], kernel_size=1)

  def forward(self, x):
    return self.conv(self.layer3(self.layer2(self.layer1(self.convnormrelu(x)))))


class MotionEncoder(nn.Module):
  def __init__(self, *, in_channels_corr, corr_layers, flow_layers, out_channels):
    super().__init__()
    self.convcorr1 = Conv2dNormActivation(in_channels_corr, corr_layers[0], 1)
    self.convcorr2 = (Conv2dNormActivation(corr_layers[0], corr_layers[1], 3)
                      if len(corr_layers) == 2 else nn.Identity())
    self.convflow1 = Conv2dNormActivation(2, flow_layers[0], 7)
    self.convflow2 = Conv2dNormActivation(flow_layers[0], flow_layers[1], 3)
    self.conv = Conv2dNormActivation(corr_layers[-1] + flow_layers[-1], out_channels - 2, 3)

  def forward(self, flow, corr_features):
    corr = self.convcorr2(self.convcorr1(corr_features))
    f = self.convflow2(self.convflow1(flow))
    return torch.cat([self.conv(torch.cat([corr, f], dim=1)), flow], dim=1)


class ConvGRU(nn.Module):
  def __init__(self, *, input_size, hidden_size, kernel_size, padding):
    super().__init__()
    conv = lambda: nn.Conv2d(hidden_size + input_size, hidden_size, kernel_size, padding=padding)
    self.convz, self.convr, self.convq = conv(), conv(), conv()

  def forward(self, h, x):
    hx = torch.cat([h, x], dim=1)
    z = torch.sigmoid(self.convz(hx))
    r = torch.sigmoid(self.convr(hx))
    q = torch.tanh(self.convq(torch.cat([r * h, x], dim=1)))
    return (1 - z) * h + z * q


class RecurrentBlock(nn.Module):
  def __init__(self, *, input_size, hidden_size, kernel_size, padding):
    super().__init__()
    self.convgru1 = ConvGRU(input_size=input_size, hidden_size=hidden_size,
                            kernel_size=kernel_size[0], padding=padding[0])
    self.convgru2 = (ConvGRU(input_size=input_size, hidden_size=hidden_size,
                             kernel_size=kernel_size[1], padding=padding[1])
                     if len(kernel_size) == 2 else None)
    self.hidden_size = hidden_size

  def forward(self, h, x):
    h = self.convgru1(h, x)
    return h if self.convgru2 is None else self.convgru2(h, x)


class FlowHead(nn.Module):
  def __init__(self, *, in_channels, hidden_size):
    super().__init__()
    self.conv1 = nn.Conv2d(in_channels, hidden_size, 3, padding=1)
    self.conv2 = nn.Conv2d(hidden_size, 2, 3, padding=1)

  def forward(self, x):
    return self.conv2(F.relu(self.conv1(x)))


class UpdateBlock(nn.Module):
  def __init__(self, *, motion_encoder, recurrent_block, flow_head):
    super().__init__()
    self.motion_encoder, self.recurrent_block, self.flow_head = (motion_encoder, recurrent_block,
                                                                 flow_head)
    self.hidden_state_size = recurrent_block.hidden_size

  def forward(self, hidden_state, context, corr_features, flow):
    x = torch.cat([context, self.motion_encoder(flow, corr_features)], dim=1)
    hidden_state = self.recurrent_block(hidden_state, x)
    return hidden_state, self.flow_head(hidden_state)


class MaskPredictor(nn.Module):
  def __init__(self, *, in_channels, hidden_size, multiplier=0.25):
    super().__init__()
    self.convrelu = Conv2dNormActivation(in_channels, hidden_size, 3)
    self.conv = nn.Conv2d(hidden_size, 8 * 8 * 9, 1, padding=0)
    self.multiplier = multiplier

  def forward(self, x):
    return self.multiplier * self.conv(self.convrelu(x))


def grid_sample(img, absolute_grid):
  """torchvision's: F.grid_sample(align_corners=True) on absolute pixel coordinates."""
  h, w = img.shape[-2:]
  xgrid, ygrid = absolute_grid.split([1, 1], dim=-1)
  xgrid = 2 * xgrid / (w - 1) - 1
  if h > 1:
    ygrid = 2 * ygrid / (h - 1) - 1
  return F.grid_sample(img, torch.cat([xgrid, ygrid], dim=-1), mode="bilinear", align_corners=True)


class CorrBlock(nn.Module):
  def __init__(self, *, num_levels=4, radius=4):
    super().__init__()
    self.num_levels, self.radius = num_levels, radius
    self.out_channels = num_levels * (2 * radius + 1) ** 2

  def build_pyramid(self, fmap1, fmap2):
    b, c, h, w = fmap1.shape
    corr = torch.matmul(fmap1.view(b, c, h * w).transpose(1, 2), fmap2.view(b, c, h * w))
    corr = (corr / torch.sqrt(torch.tensor(c))).reshape(b * h * w, 1, h, w)
    self.corr_pyramid = [corr]
    for _ in range(self.num_levels - 1):
      corr = F.avg_pool2d(corr, kernel_size=2, stride=2)
      self.corr_pyramid.append(corr)

  def index_pyramid(self, centroids_coords):
    side = 2 * self.radius + 1
    d = torch.linspace(-self.radius, self.radius, side)
    delta = torch.stack(torch.meshgrid(d, d, indexing="ij"), dim=-1).view(1, side, side, 2)
    b, _, h, w = centroids_coords.shape
    centroids = centroids_coords.permute(0, 2, 3, 1).reshape(b * h * w, 1, 1, 2)
    out = []
    for corr in self.corr_pyramid:
      out.append(grid_sample(corr, centroids + delta).view(b, h, w, -1))
      centroids = centroids / 2
    return torch.cat(out, dim=-1).permute(0, 3, 1, 2).contiguous()


def make_coords_grid(b, h, w):
  coords = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
  return torch.stack(coords[::-1], dim=0).float()[None].repeat(b, 1, 1, 1)


def upsample_flow(flow, up_mask=None, factor=8):
  b, c, h, w = flow.shape
  if up_mask is None:
    return factor * F.interpolate(flow, size=(h * factor, w * factor), mode="bilinear",
                                  align_corners=True)
  up_mask = torch.softmax(up_mask.view(b, 1, 9, factor, factor, h, w), dim=2)
  up = F.unfold(factor * flow, kernel_size=3, padding=1).view(b, c, 9, 1, 1, h, w)
  up = torch.sum(up_mask * up, dim=2)
  return up.permute(0, 1, 4, 2, 5, 3).reshape(b, c, h * factor, w * factor)


class RAFT(nn.Module):
  def __init__(self, *, feature_encoder, context_encoder, corr_block, update_block,
               mask_predictor=None):
    super().__init__()
    self.feature_encoder, self.context_encoder = feature_encoder, context_encoder
    self.corr_block, self.update_block = corr_block, update_block
    self.mask_predictor = mask_predictor

  def forward(self, image1, image2, num_flow_updates=12):
    b, _, h, w = image1.shape
    fmap1, fmap2 = torch.chunk(self.feature_encoder(torch.cat([image1, image2], dim=0)), 2)
    self.corr_block.build_pyramid(fmap1, fmap2)
    hidden_size = self.update_block.hidden_state_size
    context_out = self.context_encoder(image1)
    hidden_state, context = torch.split(
        context_out, [hidden_size, context_out.shape[1] - hidden_size], dim=1)
    hidden_state, context = torch.tanh(hidden_state), F.relu(context)
    coords0 = make_coords_grid(b, h // 8, w // 8)
    coords1 = make_coords_grid(b, h // 8, w // 8)
    flow_predictions = []
    for _ in range(num_flow_updates):
      corr_features = self.corr_block.index_pyramid(coords1)
      hidden_state, delta_flow = self.update_block(hidden_state, context, corr_features,
                                                   coords1 - coords0)
      coords1 = coords1 + delta_flow
      up_mask = None if self.mask_predictor is None else self.mask_predictor(hidden_state)
      flow_predictions.append(upsample_flow(coords1 - coords0, up_mask))
    return flow_predictions


def _raft(*, feature_layers, feature_block, context_layers, context_block, context_norm,
          radius, corr_layers, flow_layers, motion_out, hidden, kernels, paddings, head_hidden,
          mask):
  corr_block = CorrBlock(num_levels=4, radius=radius)
  motion = MotionEncoder(in_channels_corr=corr_block.out_channels, corr_layers=corr_layers,
                         flow_layers=flow_layers, out_channels=motion_out)
  recurrent = RecurrentBlock(input_size=motion_out + context_layers[-1] - hidden,
                             hidden_size=hidden, kernel_size=kernels, padding=paddings)
  return RAFT(
      feature_encoder=FeatureEncoder(block=feature_block, layers=feature_layers,
                                     norm_layer=nn.InstanceNorm2d),
      context_encoder=FeatureEncoder(block=context_block, layers=context_layers,
                                     norm_layer=context_norm),
      corr_block=corr_block,
      update_block=UpdateBlock(motion_encoder=motion, recurrent_block=recurrent,
                               flow_head=FlowHead(in_channels=hidden, hidden_size=head_hidden)),
      mask_predictor=MaskPredictor(in_channels=hidden, hidden_size=256) if mask else None)


def raft_large():
  return _raft(feature_layers=(64, 64, 96, 128, 256), feature_block=ResidualBlock,
               context_layers=(64, 64, 96, 128, 256), context_block=ResidualBlock,
               context_norm=nn.BatchNorm2d, radius=4, corr_layers=(256, 192),
               flow_layers=(128, 64), motion_out=128, hidden=128, kernels=((1, 5), (5, 1)),
               paddings=((0, 2), (2, 0)), head_hidden=256, mask=True)


def raft_small():
  return _raft(feature_layers=(32, 32, 64, 96, 128), feature_block=BottleneckBlock,
               context_layers=(32, 32, 64, 96, 160), context_block=BottleneckBlock,
               context_norm=None, radius=3, corr_layers=(96,), flow_layers=(64, 32),
               motion_out=82, hidden=96, kernels=(3,), paddings=(1,), head_hidden=128,
               mask=False)


def _make_colorwheel():
  """The Middlebury colour wheel (Baker et al. 2007), 55 colours, as torchvision builds it."""
  RY, YG, GC, CB, BM, MR = 15, 6, 4, 11, 13, 6
  wheel = torch.zeros((RY + YG + GC + CB + BM + MR, 3))
  ramp = lambda n: torch.floor(255 * torch.arange(0, n) / n)
  col = 0
  wheel[0:RY, 0], wheel[0:RY, 1] = 255, ramp(RY)
  col += RY
  wheel[col:col + YG, 0], wheel[col:col + YG, 1] = 255 - ramp(YG), 255
  col += YG
  wheel[col:col + GC, 1], wheel[col:col + GC, 2] = 255, ramp(GC)
  col += GC
  wheel[col:col + CB, 1], wheel[col:col + CB, 2] = 255 - ramp(CB), 255
  col += CB
  wheel[col:col + BM, 2], wheel[col:col + BM, 0] = 255, ramp(BM)
  col += BM
  wheel[col:col + MR, 2], wheel[col:col + MR, 0] = 255 - ramp(MR), 255
  return wheel


def flow_to_image(flow):
  """torchvision.utils.flow_to_image: (N, 2, H, W) or (2, H, W) float -> uint8 (N, 3, H, W),
  normalized by the largest flow norm of the whole input."""
  single = flow.ndim == 3
  flow = flow[None] if single else flow
  max_norm = torch.sum(flow.pow(2), dim=1).sqrt().max()
  normalized = flow / (max_norm + torch.finfo(flow.dtype).eps)
  n, _, h, w = normalized.shape
  image = torch.zeros((n, 3, h, w), dtype=torch.uint8)
  wheel = _make_colorwheel()
  cols = wheel.shape[0]
  norm = torch.sum(normalized.pow(2), dim=1).sqrt()
  a = torch.atan2(-normalized[:, 1], -normalized[:, 0]) / torch.pi
  fk = (a + 1) / 2 * (cols - 1)
  k0 = torch.floor(fk).to(torch.long)
  k1 = k0 + 1
  k1[k1 == cols] = 0
  f = fk - k0
  for c in range(3):
    col0, col1 = wheel[:, c][k0] / 255.0, wheel[:, c][k1] / 255.0
    col = (1 - f) * col0 + f * col1
    image[:, c] = torch.floor(255 * (1 - norm * (1 - col)))
  return image[0] if single else image
