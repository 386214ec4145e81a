"""svd-unet: a diffusers UNetSpatioTemporalConditionModel folder (the unet/ of Stable Video
Diffusion img2vid or img2vid-xt) -> sem_repa_jax UNetSpatioTemporal (Orbax).

Paths mirror diffusers' module names (down_blocks.0.resnets.1 -> down_blocks_0/resnets_1, GroupNorm
and LayerNorm weight -> scale, downsamplers.0.conv -> downsampler, to_out.0 -> to_out,
ff.net.0.proj / ff.net.2 -> ff/proj_in / ff/proj_out). Layouts: q/k/v (heads*hd, D) -> (D, heads,
hd) and to_out -> (heads, hd, D), with the heads of each block; GEGLU's proj (2*inner, D) ->
(D, 2, inner); 2D convolutions OIHW -> HWIO; the temporal ResNet's Conv3d (O, I, 3, 1, 1) ->
(3, I, O). StableAnimator's `attn2.processor.id_to_{k,v}` map to attn2/to_{k,v}_id of a model
built with extra_context_tokens.

SRC may also be StableAnimator's `unet.pth` (a torch state dict in diffusers names plus the ID
adapter's id_to_k / id_to_v of every spatial cross-attention), with --config naming the SVD unet
folder or its config.json: the model is then built with STABLEANIMATOR (4 face tokens, the
distribution-aware alignment), and the adapter tensors must be exactly those of the config.
"""
import json
import os

import numpy as np

from conversion import driver, mapping
from conversion.mapping import ConversionError, DictSource, Rule
from conversion.safetensors_io import CheckpointError
from sem_repa_jax.models.registry import factory_of

KIND = "svd-unet"
HELP = ("Stable Video Diffusion (img2vid, img2vid-xt) U-Net from a diffusers folder "
        "(config.json + safetensors; --variant fp16 for the fp16 files), or StableAnimator's "
        "unet.pth with --config <SVD unet folder or config.json>")
FACTORY = factory_of(KIND)
# What StableAnimator's unet.pth is built with (its 4 face tokens after the CLIP token).
STABLEANIMATOR = dict(extra_context_tokens=4, id_alignment="distribution")


def geglu_kernel(w):
  """Linear (2*inner, D) of GEGLU's proj -> (D, 2, inner): value half, then gate half."""
  return mapping.split_axis(w.T, 1, (2, w.shape[0] // 2))


def geglu_bias(b):
  return mapping.split_axis(b, 0, (2, b.shape[0] // 2))


def _norm(name_re, target):
  return [(name_re + r"\.weight", target + "/scale", mapping.identity),
          (name_re + r"\.bias", target + "/bias", mapping.identity)]


def _linear(name_re, target, kernel=mapping.linear, bias=mapping.identity):
  return [(name_re + r"\.weight", target + "/kernel", kernel),
          (name_re + r"\.bias", target + "/bias", bias)]


def _attention_leaves(heads: int):
  def qkv(w):   # (heads*hd, D) -> (D, heads, hd)
    return mapping.split_axis(w.T, 1, (heads, w.shape[0] // heads))

  def to_out(w):   # (D, heads*hd) -> (heads, hd, D)
    return mapping.split_axis(w.T, 0, (heads, w.shape[1] // heads))

  a = r"(?P<attn>attn[12])"
  return ([(a + r"\.(?P<p>to_[qkv])\.weight", r"\g<attn>/\g<p>/kernel", qkv),
           (r"attn2\.processor\.id_(?P<p>to_[kv])\.weight", r"attn2/\g<p>_id/kernel", qkv)]
          + _linear(a + r"\.to_out\.0", r"\g<attn>/to_out", to_out))


def _transformer_leaves(heads: int):
  blk = (r"(?P<tb>transformer_blocks|temporal_transformer_blocks)\.(?P<t>\d+)\.",
         r"\g<tb>_\g<t>/")
  inner = (_norm(r"(?P<n>norm_in|norm[123])", r"\g<n>") + _attention_leaves(heads)
           + _linear(r"(?P<ff>ff|ff_in)\.net\.0\.proj", r"\g<ff>/proj_in", geglu_kernel, geglu_bias)
           + _linear(r"(?P<ff>ff|ff_in)\.net\.2", r"\g<ff>/proj_out"))
  return (_norm("norm", "norm") + _linear(r"(?P<pr>proj_in|proj_out)", r"\g<pr>")
          + _linear(r"time_pos_embed\.(?P<l>linear_[12])", r"time_pos_embed/\g<l>")
          + [(r"time_mixer\.mix_factor", "time_mixer/mix_factor", mapping.identity)]
          + [(blk[0] + s, blk[1] + t, f) for s, t, f in inner])


def _resnet_leaves():
  part = r"(?P<part>spatial_res_block|temporal_res_block)"
  conv = r"(?P<c>conv1|conv2|conv_shortcut)"
  return (_norm(part + r"\.(?P<n>norm[12])", r"\g<part>/\g<n>")
          + [(r"spatial_res_block\." + conv + r"\.weight", r"spatial_res_block/\g<c>/kernel",
              mapping.conv2d),
             (r"temporal_res_block\." + conv + r"\.weight", r"temporal_res_block/\g<c>/kernel",
              mapping.conv3d_over_frames),
             (part + r"\." + conv + r"\.bias", r"\g<part>/\g<c>/bias", mapping.identity),
             (r"time_mixer\.mix_factor", "time_mixer/mix_factor", mapping.identity)]
          + _linear(part + r"\.time_emb_proj", r"\g<part>/time_emb_proj"))


def _block_rules(src: str, dst: str, heads: int) -> list[Rule]:
  leaves = ([(r"resnets\.(?P<r>\d+)\." + s, r"resnets_\g<r>/" + t, f)
             for s, t, f in _resnet_leaves()]
            + [(r"attentions\.(?P<a>\d+)\." + s, r"attentions_\g<a>/" + t, f)
               for s, t, f in _transformer_leaves(heads)]
            + _linear(r"(?P<s>down|up)samplers\.0\.conv", r"\g<s>sampler", mapping.conv2d))
  return [Rule(src + s, dst + t, f) for s, t, f in leaves]


def rules(config) -> list[Rule]:
  """Source name patterns -> Flax paths for one config (the heads of each block shape q/k/v)."""
  c = config
  n = len(c.block_out_channels)
  top = (_linear(r"(?P<c>conv_in|conv_out)", r"params/\g<c>", mapping.conv2d)
         + _norm("conv_norm_out", "params/conv_norm_out")
         + _linear(r"(?P<e>time_embedding|add_embedding)\.(?P<l>linear_[12])",
                   r"params/\g<e>/\g<l>"))
  out = [Rule(s, t, f) for s, t, f in top]
  for i in range(n):
    out += _block_rules(rf"down_blocks\.{i}\.", f"params/down_blocks_{i}/",
                        c.num_attention_heads[i])
    out += _block_rules(rf"up_blocks\.{i}\.", f"params/up_blocks_{i}/",
                        c.num_attention_heads[n - 1 - i])
  return out + _block_rules(r"mid_block\.", "params/mid_block/", c.num_attention_heads[-1])


def target_shapes(module) -> dict:
  """Flat {path: shape} of every variable the module has, found abstractly (nothing allocated)."""
  from sem_repa_jax.models.svd.unet import example_inputs
  return mapping.abstract_shapes(module.init, **example_inputs(module.config))


def convert_arrays(source, config, dtype=np.float32, src_name: str = "checkpoint") -> dict:
  """Flat Flax variables from a Source of diffusers tensor names; strict (conversion.mapping)."""
  return driver.convert_arrays(KIND, source, config, rules(config), target_shapes, dtype, src_name)


def adapter_names(config) -> list[str]:
  """The diffusers names of StableAnimator's adapter tensors for `config`: id_to_k and id_to_v of
  attn2 in every spatial transformer block of every cross-attention block (32 for SVD-XT)."""
  from sem_repa_jax.models.svd.unet import DOWN_BLOCKS, UP_BLOCKS
  c, n = config, len(config.block_out_channels)
  blocks = [(f"down_blocks.{i}", c.layers_per_block[i], c.transformer_layers_per_block[i])
            for i, t in enumerate(c.down_block_types) if t == DOWN_BLOCKS[0]]
  blocks.append(("mid_block", 1, c.transformer_layers_per_block[-1]))
  blocks += [(f"up_blocks.{i}", c.layers_per_block[n - 1 - i] + 1,
              c.transformer_layers_per_block[n - 1 - i])
             for i, t in enumerate(c.up_block_types) if t == UP_BLOCKS[0]]
  return [f"{b}.attentions.{a}.transformer_blocks.{t}.attn2.processor.id_to_{p}.weight"
          for b, attentions, layers in blocks for a in range(attentions) for t in range(layers)
          for p in "kv"]


def _read_json_config(path: str) -> dict:
  """--config: a unet folder (its config.json) or a config.json file."""
  file = os.path.join(path, "config.json") if os.path.isdir(path) else path
  try:
    with open(file) as f:
      return json.load(f)
  except FileNotFoundError:
    raise CheckpointError(f"--config {file}: missing (expected the SVD unet folder or its "
                          "config.json)") from None
  except json.JSONDecodeError as e:
    raise CheckpointError(f"--config {file}: not valid JSON: {e}") from None


def _pth_reader(config_path: str):
  """The Reader of StableAnimator's unet.pth: config from --config with STABLEANIMATOR, and the
  adapter tensors checked by name against the config before anything is mapped."""
  from sem_repa_jax.models.svd.unet import config_from_diffusers

  def read(src: str, variant=None):
    if variant is not None:
      raise ValueError(f"--variant {variant!r}: {src} is one .pth file, which has no variants")
    try:
      config = config_from_diffusers(_read_json_config(config_path), **STABLEANIMATOR)
    except (TypeError, ValueError) as e:
      raise ConversionError(src, [f"--config {config_path}: {e}"]) from None
    from conversion.torch_io import read_state_dict
    arrays = read_state_dict(src, alternative=", or convert a diffusers unet folder instead")
    want = set(adapter_names(config))
    have = {k for k in arrays if ".processor." in k}
    problems = [f"missing adapter tensor {k!r} (StableAnimator's unet.pth has id_to_k and id_to_v "
                f"in every spatial cross-attention: {len(want)} for this config)"
                for k in sorted(want - have)]
    problems += [f"unexpected adapter tensor {k!r} {arrays[k].shape}: not the attn2 of a spatial "
                 "transformer block of this config" for k in sorted(have - want)]
    if problems:
      raise ConversionError(src, problems)
    return DictSource(arrays), config

  return read


def _is_state_dict_file(src: str) -> bool:
  return os.path.isfile(src) and not src.endswith(".safetensors")


def convert(src: str, dst: str, dtype: str = "float32", variant=None, config=None) -> str:
  """SRC a diffusers unet folder (config: None), or StableAnimator's unet.pth with config the SVD
  unet folder or config.json it was trained from."""
  from sem_repa_jax.models.svd.unet import config_from_diffusers
  if _is_state_dict_file(src) and config is None:
    raise ValueError(f"--src {src} is a state dict file: pass --config <SVD unet folder or "
                     "config.json> (a diffusers folder needs none)")
  if config is not None and not _is_state_dict_file(src):
    raise ValueError(f"--config {config}: only for a .pth --src; the folder {src} has its "
                     "config.json")
  read = driver.folder(config_from_diffusers) if config is None else _pth_reader(config)
  return driver.convert(src, dst, dtype, kind=KIND, read=read, rules=rules,
                        target_shapes=target_shapes, variant=variant)
