"""StableAnimator in PyTorch as the official code has it: the references of the parity tests
(tests/methods/test_stableanimator_*.py) and the PyTorch side of benchmarks/train_animator.py.

Written from the facts in porting-notes.md ("StableAnimator", read from the official code), with
the official state_dict key names: PoseNet, FusionFaceId (the face encoder), a diffusers SVD U-Net
carrying the official attention processors (the distribution-aware ID adapter on the spatial
attn2, the CLIP token alone on the temporal attn2), and train.py's loss (`official_inputs`, then
`official_loss`). No pytest here: the GPU image may lack it.
"""
import math

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import UNetSpatioTemporalConditionModel
from diffusers.models.attention_processor import AttnProcessor2_0
from torch import nn

FACE_TOKENS = 4
P = 0.1                       # conditioning dropout
SCALE = 0.18215               # VAE scaling factor
IDS = (6.0, 127.0, 0.02)      # added_time_ids: fps, motion bucket, noise augmentation


class TorchPoseNet(nn.Module):
  """The official PoseNet: 8 convs each followed by SiLU, final_proj 1x1, times scale."""

  def __init__(self, out_channels=320):
    super().__init__()
    layers, cin = [], 3
    for cout, k, s in [(3, 3, 1), (16, 4, 2), (16, 3, 1), (32, 4, 2), (32, 3, 1), (64, 4, 2),
                       (64, 3, 1), (128, 3, 1)]:
      layers += [nn.Conv2d(cin, cout, k, stride=s, padding=1), nn.SiLU()]
      cin = cout
    self.conv_layers = nn.Sequential(*layers)
    self.final_proj = nn.Conv2d(128, out_channels, 1)
    self.scale = nn.Parameter(torch.ones(1) * 2)

  def forward(self, x):   # (b, f, c, h, w) -> (b f, c', h/8, w/8)
    if x.ndim == 5:
      x = x.flatten(0, 1)
    return self.final_proj(self.conv_layers(x)) * self.scale


class TorchPerceiverAttention(nn.Module):
  def __init__(self, dim, dim_head=64):
    super().__init__()
    self.heads, self.dim_head = dim // dim_head, dim_head
    self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
    self.to_q = nn.Linear(dim, dim, bias=False)
    self.to_kv = nn.Linear(dim, 2 * dim, bias=False)
    self.to_out = nn.Linear(dim, dim, bias=False)

  def forward(self, x, latents):
    x, latents = self.norm1(x), self.norm2(latents)
    b, n, _ = latents.shape
    heads = lambda t: t.view(b, t.shape[1], self.heads, -1).transpose(1, 2)
    q = heads(self.to_q(latents))
    k, v = (heads(t) for t in self.to_kv(torch.cat([x, latents], dim=1)).chunk(2, dim=-1))
    s = 1 / math.sqrt(math.sqrt(self.dim_head))
    w = torch.softmax(((q * s) @ (k * s).transpose(-2, -1)).float(), dim=-1).type(q.dtype)
    return self.to_out((w @ v).transpose(1, 2).reshape(b, n, -1))


class TorchFacePerceiver(nn.Module):
  def __init__(self, dim, clip_dim, depth=4, ff_mult=4):
    super().__init__()
    self.proj_in, self.proj_out = nn.Linear(clip_dim, dim), nn.Linear(dim, dim)
    self.norm_out = nn.LayerNorm(dim)
    self.layers = nn.ModuleList(
        nn.ModuleList([TorchPerceiverAttention(dim),
                       nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, ff_mult * dim, bias=False),
                                     nn.GELU(), nn.Linear(ff_mult * dim, dim, bias=False))])
        for _ in range(depth))

  def forward(self, latents, x):
    x = self.proj_in(x)
    for attn, ff in self.layers:
      latents = attn(x, latents) + latents
      latents = ff(latents) + latents
    return self.norm_out(self.proj_out(latents))


class TorchFusionFaceId(nn.Module):
  def __init__(self, dim, id_dim, clip_dim, tokens=4):
    super().__init__()
    self.dim, self.tokens = dim, tokens
    self.proj = nn.Sequential(nn.Linear(id_dim, 2 * id_dim), nn.GELU(),
                              nn.Linear(2 * id_dim, dim * tokens))
    self.norm = nn.LayerNorm(dim)
    self.fusion_model = TorchFacePerceiver(dim, clip_dim)

  def forward(self, id_embeds, clip_embeds):
    x = self.norm(self.proj(id_embeds).reshape(-1, self.tokens, self.dim))
    return self.fusion_model(x, clip_embeds)


def _attend(attn, q, k, v):
  """Multi-head softmax attention of diffusers' Attention (scale 1/sqrt(head_dim))."""
  q, k, v = (attn.head_to_batch_dim(t) for t in (q, k, v))
  return attn.batch_to_head_dim(F.scaled_dot_product_attention(q, k, v))


class IDAdapterProcessor(nn.Module):
  """The official adapter: CLIP token through to_k / to_v, the face tokens through id_to_k /
  id_to_v, each attended by the same queries; the face branch aligned per frame (over tokens and
  channels, unbiased std, eps 1e-5 on its std) to the CLIP branch, added, then to_out."""

  def __init__(self, hidden_size, cross_attention_dim):
    super().__init__()
    self.id_to_k = nn.Linear(cross_attention_dim, hidden_size, bias=False)
    self.id_to_v = nn.Linear(cross_attention_dim, hidden_size, bias=False)

  def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
               temb=None, **kwargs):
    clip, face = encoder_hidden_states[:, :-FACE_TOKENS], encoder_hidden_states[:, -FACE_TOKENS:]
    q = attn.to_q(hidden_states)
    hs = _attend(attn, q, attn.to_k(clip), attn.to_v(clip))
    ip = _attend(attn, q, self.id_to_k(face), self.id_to_v(face))
    mean_h, std_h = hs.mean(dim=(1, 2), keepdim=True), hs.std(dim=(1, 2), keepdim=True)
    mean_i, std_i = ip.mean(dim=(1, 2), keepdim=True), ip.std(dim=(1, 2), keepdim=True)
    hs = hs + 1.0 * ((ip - mean_i) * (std_h / (std_i + 1e-5)) + mean_h)
    return attn.to_out[1](attn.to_out[0](hs))


class ClipTokenOnlyProcessor(AttnProcessor2_0):
  """The official temporal cross-attention: the context without the face tokens."""

  def __call__(self, attn, hidden_states, encoder_hidden_states=None, *args, **kwargs):
    return super().__call__(attn, hidden_states, encoder_hidden_states[:, :-FACE_TOKENS], *args,
                            **kwargs)


def stableanimator_unet(**config):
  """A diffusers SVD U-Net with StableAnimator's processors (ID adapter on spatial attn2)."""
  model = UNetSpatioTemporalConditionModel(**config)
  procs = {}
  for name in model.attn_processors:
    module = model.get_submodule(name.rsplit(".processor", 1)[0])
    if name.endswith("attn2.processor") and ".temporal_transformer_blocks." not in name:
      procs[name] = IDAdapterProcessor(module.inner_dim, module.cross_attention_dim)
    elif name.endswith("attn2.processor"):
      procs[name] = ClipTokenOnlyProcessor()
    else:
      procs[name] = AttnProcessor2_0()
  model.set_attn_processor(procs)
  return model


def official_inputs(batch, sigma, noise, r, device="cpu") -> dict:
  """One step's tensors on `device`, channels-first as train.py has them: a numpy batch
  (records' fields), the sigmas (B,), the noise like video_latents and the dropout uniforms (B,)."""
  def t(a, *perm):
    x = torch.from_numpy(np.array(a)).float()   # a writable copy
    return (x.permute(*perm) if perm else x).contiguous().to(device)
  return {"latents": t(batch["video_latents"], 0, 1, 4, 2, 3),         # b f c h w
          "noise": t(noise, 0, 1, 4, 2, 3), "sigma": t(sigma), "r": t(r),
          "clip_embeds": t(batch["clip_embeds"]), "id_embeds": t(batch["id_embeds"]),
          "reference_latents": t(batch["reference_latents"], 0, 3, 1, 2),
          "pose_images": t(batch["pose_images"], 0, 1, 4, 2, 3),
          "face_weight_masks": t(batch["face_weight_masks"])}


def official_loss(models, x: dict):
  """train.py's loss (a scalar tensor, differentiable in the three networks) on official_inputs."""
  unet, pose_net, face_encoder = models
  latents, sigma, r = x["latents"], x["sigma"], x["r"]
  s = sigma.reshape(-1, 1, 1, 1, 1)
  noisy = latents + x["noise"] * s
  timesteps = 0.25 * sigma.log()
  inp = noisy / (s ** 2 + 1) ** 0.5
  ehs = x["clip_embeds"][:, None]
  image_embed = ehs.clone()
  ehs = torch.where((r < 2 * P).reshape(-1, 1, 1), torch.zeros_like(ehs), ehs)
  cond = x["reference_latents"] / SCALE
  mask = 1 - ((r >= P).float() * (r < 3 * P).float())
  cond = (mask.reshape(-1, 1, 1, 1) * cond)[:, None].repeat(1, latents.shape[1], 1, 1, 1)
  pose = x["pose_images"] / 127.5 - 1
  pose_latents = pose_net(pose)
  face = face_encoder(x["id_embeds"], image_embed)
  hook = unet.conv_in.register_forward_hook(lambda m, i, o: o + pose_latents)
  try:
    ids = torch.tensor([IDS] * latents.shape[0], device=latents.device)
    pred = unet(torch.cat([inp, cond], 2), timesteps, torch.cat([ehs, face], 1),
                added_time_ids=ids).sample
  finally:
    hook.remove()
  denoised = pred * (-s / (s ** 2 + 1) ** 0.5) + noisy / (s ** 2 + 1)
  weighing = (1 + s ** 2) * s ** -2.0
  m = x["face_weight_masks"][:, :, None]
  per = (weighing * (denoised - latents) ** 2 * (1 + m)).reshape(latents.shape[0], -1).mean(1)
  return per.mean()


def official_trainable(models) -> list:
  """The parameters train.py optimizes: PoseNet, the face encoder and every U-Net parameter
  whose name contains 'attentions' (the ID adapter included); the rest get requires_grad False."""
  unet, pose_net, face_encoder = models
  trained = [*pose_net.parameters(), *face_encoder.parameters()]
  for name, p in unet.named_parameters():
    p.requires_grad_("attentions" in name)
    if "attentions" in name:
      trained.append(p)
  return trained
