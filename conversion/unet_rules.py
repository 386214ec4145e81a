"""Key-mapping rules shared by the diffusers U-Nets (svd-unet, sd-unet): the leaf rules of their
common modules and the U-Net skeleton that places them.

A leaf rule is (source regex, target template, transform) relative to a module; `prefixed` puts
a list of them under a module path. Paths mirror diffusers' module names (down_blocks.0.resnets.1
-> down_blocks_0/resnets_1, GroupNorm and LayerNorm weight -> scale, to_out.0 -> to_out,
ff.net.0.proj / ff.net.2 -> ff/proj_in / ff/proj_out, (down|up)samplers.0.conv ->
(down|up)sampler). Layouts: q/k/v (heads*hd, D) -> (D, heads, hd) and to_out -> (heads, hd, D),
with the heads of each block; GEGLU's proj (2*inner, D) -> (D, 2, inner); convolutions OIHW ->
HWIO.
"""
from typing import Callable, Sequence

from conversion import mapping
from conversion.mapping import Rule


def geglu_kernel(w):
  """Linear (2*inner, D) of GEGLU's proj -> (D, 2, inner): value half, then gate half."""
  return mapping.split_axis(w.T, 1, (2, w.shape[0] // 2))


def geglu_bias(b):
  return mapping.split_axis(b, 0, (2, b.shape[0] // 2))


def norm(name_re, target):
  return [(name_re + r"\.weight", target + "/scale", mapping.identity),
          (name_re + r"\.bias", target + "/bias", mapping.identity)]


def linear(name_re, target, kernel=mapping.linear, bias=mapping.identity):
  return [(name_re + r"\.weight", target + "/kernel", kernel),
          (name_re + r"\.bias", target + "/bias", bias)]


def prefixed(src: str, dst: str, leaves) -> list:
  return [(src + s, dst + t, f) for s, t, f in leaves]


def qkv_kernel(heads: int):
  def qkv(w):   # (heads*hd, D) -> (D, heads, hd)
    return mapping.split_axis(w.T, 1, (heads, w.shape[0] // heads))
  return qkv


def attention_leaves(heads: int):
  """attn1 / attn2 (no q/k/v bias, to_out with bias)."""
  def to_out(w):   # (D, heads*hd) -> (heads, hd, D)
    return mapping.split_axis(w.T, 0, (heads, w.shape[1] // heads))

  a = r"(?P<attn>attn[12])"
  return ([(a + r"\.(?P<p>to_[qkv])\.weight", r"\g<attn>/\g<p>/kernel", qkv_kernel(heads))]
          + linear(a + r"\.to_out\.0", r"\g<attn>/to_out", to_out))


def transformer_block_leaves(heads: int, blocks: str = "transformer_blocks",
                             norms: str = "norm[123]", ffs: str = "ff", extra=()):
  """BasicTransformerBlocks named `blocks` (a regex alternation), their LayerNorms `norms`,
  GEGLU feed-forwards `ffs` and `extra` leaf rules of their own."""
  inner = (norm(rf"(?P<n>{norms})", r"\g<n>") + attention_leaves(heads) + list(extra)
           + linear(rf"(?P<ff>{ffs})\.net\.0\.proj", r"\g<ff>/proj_in", geglu_kernel, geglu_bias)
           + linear(rf"(?P<ff>{ffs})\.net\.2", r"\g<ff>/proj_out"))
  return prefixed(rf"(?P<tb>{blocks})\.(?P<t>\d+)\.", r"\g<tb>_\g<t>/", inner)


def resnet_leaves(conv=mapping.conv2d):
  """ResnetBlock2D (or a relative with other convolutions): norm1/2, conv1/2, conv_shortcut,
  time_emb_proj."""
  c = r"(?P<c>conv1|conv2|conv_shortcut)"
  return (norm(r"(?P<n>norm[12])", r"\g<n>") + linear(c, r"\g<c>", conv)
          + linear(r"time_emb_proj", "time_emb_proj"))


def unet_rules(heads: Sequence[int], resnet, transformer: Callable[[int], list],
               embeddings: str = "time_embedding") -> list[Rule]:
  """Every rule of a U-Net with len(heads) levels: conv_in/out, conv_norm_out, the `embeddings`
  MLPs (a regex alternation), and per block its resnets (`resnet` leaves), attentions
  (`transformer(heads of the block)` leaves) and resampler; up block i has level n-1-i's heads."""
  n = len(heads)
  top = (linear(r"(?P<c>conv_in|conv_out)", r"params/\g<c>", mapping.conv2d)
         + norm("conv_norm_out", "params/conv_norm_out")
         + linear(rf"(?P<e>{embeddings})\.(?P<l>linear_[12])", r"params/\g<e>/\g<l>"))

  def block(src, dst, h):
    leaves = (prefixed(r"resnets\.(?P<r>\d+)\.", r"resnets_\g<r>/", resnet)
              + prefixed(r"attentions\.(?P<a>\d+)\.", r"attentions_\g<a>/", transformer(h))
              + linear(r"(?P<s>down|up)samplers\.0\.conv", r"\g<s>sampler", mapping.conv2d))
    return prefixed(src, dst, leaves)

  leaves = list(top)
  for i in range(n):
    leaves += block(rf"down_blocks\.{i}\.", f"params/down_blocks_{i}/", heads[i])
    leaves += block(rf"up_blocks\.{i}\.", f"params/up_blocks_{i}/", heads[n - 1 - i])
  leaves += block(r"mid_block\.", "params/mid_block/", heads[-1])
  return [Rule(s, t, f) for s, t, f in leaves]
