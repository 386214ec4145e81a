"""svd-unet: a diffusers UNetSpatioTemporalConditionModel folder (the unet/ of Stable Video
Diffusion img2vid or img2vid-xt) -> sem_repa_jax UNetSpatioTemporal (Orbax).

Paths and layouts are those of every diffusers U-Net (conversion/unet_rules.py); of its own the SVD
U-Net has the temporal ResNet, whose Conv3d (O, I, 3, 1, 1) -> (3, I, O), the temporal transformer
blocks (norm_in, ff_in), the frame position MLP and the AlphaBlender mix factors.
StableAnimator's `attn2.processor.id_to_{k,v}` map to attn2/to_{k,v}_id of a model built with
extra_context_tokens.

SRC may also be StableAnimator's `unet.pth` (a torch state dict in diffusers names plus the ID
adapter's id_to_k / id_to_v of every spatial cross-attention), with --config naming the SVD unet
folder or its config.json: the model is then built with STABLEANIMATOR (4 face tokens, the
distribution-aware alignment), and the adapter tensors must be exactly those of the config.
"""
import json
import os

import numpy as np

from conversion import driver, mapping, unet_rules
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


def _transformer_leaves(heads: int):
  blocks = unet_rules.transformer_block_leaves(
      heads, "transformer_blocks|temporal_transformer_blocks", "norm_in|norm[123]", "ff|ff_in",
      extra=[(r"attn2\.processor\.id_(?P<p>to_[kv])\.weight", r"attn2/\g<p>_id/kernel",
              unet_rules.qkv_kernel(heads))])
  return (unet_rules.norm("norm", "norm")
          + unet_rules.linear(r"(?P<pr>proj_in|proj_out)", r"\g<pr>")
          + unet_rules.linear(r"time_pos_embed\.(?P<l>linear_[12])", r"time_pos_embed/\g<l>")
          + [(r"time_mixer\.mix_factor", "time_mixer/mix_factor", mapping.identity)] + blocks)


_RESNET = (unet_rules.prefixed(r"spatial_res_block\.", "spatial_res_block/",
                               unet_rules.resnet_leaves())
           + unet_rules.prefixed(r"temporal_res_block\.", "temporal_res_block/",
                                 unet_rules.resnet_leaves(mapping.conv3d_over_frames))
           + [(r"time_mixer\.mix_factor", "time_mixer/mix_factor", mapping.identity)])


def rules(config) -> list[Rule]:
  """Source name patterns -> Flax paths for one config (the heads of each block shape q/k/v)."""
  return unet_rules.unet_rules(config.num_attention_heads, _RESNET, _transformer_leaves,
                               "time_embedding|add_embedding")


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
