"""The configuration of the SD U-Net port: diffusers' config.json keys, presets, the reader.

Field names are diffusers' `UNet2DConditionModel` config.json keys. Note diffusers' naming quirk,
which the released SD configs depend on: `attention_head_dim` holds the NUMBER OF HEADS of each
block (diffusers passes it on as `num_attention_heads`; the head width is then channels / heads):
SD 2.x's (5, 10, 20, 20) are 5, 10, 20 and 20 heads of 64 channels, SD 1.x's 8 are 8 heads of
40, 80, 160 and 160. `num_heads` says it plainly.

`config_from_diffusers` reads a config.json dict: the keys this port models become fields; the
others (class embeddings, GLIGEN, other time embeddings, ...) are accepted only at the value that
leaves the SD architecture unchanged, and any other value is an error naming the key.
"""
import dataclasses
from dataclasses import dataclass
from typing import Any, Optional

from sem_repa_jax.models.config_fields import from_fields, unet_block_problems

DOWN_BLOCKS = ("CrossAttnDownBlock2D", "DownBlock2D")
UP_BLOCKS = ("CrossAttnUpBlock2D", "UpBlock2D")
_PER_BLOCK = ("layers_per_block", "cross_attention_dim", "transformer_layers_per_block",
              "attention_head_dim")
NORM_GROUPS = 32   # norm_num_groups of every released SD U-Net (the only value ported)

# diffusers keys this port does not model -> the values it takes (what SD 1.x/2.x record).
_FIXED = {
    "center_input_sample": (False,), "mid_block_type": ("UNetMidBlock2DCrossAttn",),
    "only_cross_attention": (False,), "downsample_padding": (1,), "mid_block_scale_factor": (1,),
    "dropout": (0.0,), "act_fn": ("silu",), "norm_num_groups": (NORM_GROUPS,),
    "encoder_hid_dim": (None,), "encoder_hid_dim_type": (None,), "num_attention_heads": (None,),
    "dual_cross_attention": (False,), "class_embed_type": (None,), "addition_embed_type": (None,),
    "addition_time_embed_dim": (None,), "num_class_embeds": (None,),
    "resnet_time_scale_shift": ("default",), "resnet_skip_time_act": (False,),
    "resnet_out_scale_factor": (1,), "time_embedding_type": ("positional",),
    "time_embedding_dim": (None,), "time_embedding_act_fn": (None,), "timestep_post_act": (None,),
    "time_cond_proj_dim": (None,), "conv_in_kernel": (3,), "conv_out_kernel": (3,),
    "projection_class_embeddings_input_dim": (None,), "attention_type": ("default",),
    "class_embeddings_concat": (False,), "mid_block_only_cross_attention": (None, False),
    "cross_attention_norm": (None,), "reverse_transformer_layers_per_block": (None,),
}
# Read only by parts the fixed values above leave out (addition_embed_type 'text').
_IGNORED = ("addition_embed_type_num_heads",)


@dataclass(frozen=True)
class UNet2DConditionConfig:
  """Integers given per block may be one int (every block); they are stored per block."""
  sample_size: Optional[int] = None
  in_channels: int = 4
  out_channels: int = 4
  flip_sin_to_cos: bool = True
  freq_shift: int = 0
  down_block_types: tuple = ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",)
  up_block_types: tuple = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3
  block_out_channels: tuple = (320, 640, 1280, 1280)
  layers_per_block: Any = 2
  norm_eps: float = 1e-5
  cross_attention_dim: Any = 1024
  transformer_layers_per_block: Any = 1
  attention_head_dim: Any = (5, 10, 20, 20)   # diffusers' name: the number of heads per block
  use_linear_projection: bool = True   # proj_in/out are Linear (SD 2.x) or 1x1 Conv2d (SD 1.x)
  upcast_attention: bool = False       # scores in float32: what this port always does

  def __post_init__(self):
    problems = unet_block_problems(self, _PER_BLOCK, {"down_block_types": DOWN_BLOCKS,
                                                      "up_block_types": UP_BLOCKS}, NORM_GROUPS)
    if not problems:
      heads = [(c, h) for c, h in zip(self.block_out_channels, self.attention_head_dim) if c % h]
      if heads:
        problems.append(f"(channels, attention_head_dim) {heads}: attention_head_dim is the "
                        "number of heads in diffusers' U-Net and must divide the width")
      if len(set(self.cross_attention_dim)) > 1:
        problems.append(f"cross_attention_dim {list(self.cross_attention_dim)}: every block reads "
                        "the same encoder_hidden_states, so one width only")
    if problems:
      raise ValueError("SD U-Net config not supported: " + "; ".join(problems))

  @property
  def num_heads(self) -> tuple:
    """Attention heads of each block (diffusers stores them as `attention_head_dim`)."""
    return self.attention_head_dim


SD21 = UNet2DConditionConfig(sample_size=96, upcast_attention=True)
PRESETS = {
    "sd21": SD21,                                     # stabilityai/stable-diffusion-2-1 (768 px)
    "sd21-base": dataclasses.replace(SD21, sample_size=64, upcast_attention=False),   # 512 px
    "sd15": dataclasses.replace(SD21, sample_size=64, cross_attention_dim=768,
                                attention_head_dim=8, use_linear_projection=False,
                                upcast_attention=False),
}


def _fixed_problems(values: dict) -> list:
  problems = []
  for k, allowed in _FIXED.items():
    if k not in values:
      continue
    v = values.pop(k)
    # only_cross_attention may be given per block; the SD value is False everywhere.
    if k == "only_cross_attention" and isinstance(v, (list, tuple)) and not any(v):
      continue
    if v not in allowed:
      want = " or ".join(repr(a) for a in allowed)
      problems.append(f"{k}={v!r} is not ported (this port takes {want})")
  for k in _IGNORED:
    values.pop(k, None)
  return problems


def config_from_diffusers(cfg: dict) -> UNet2DConditionConfig:
  """A diffusers unet config.json dict (keys starting with '_' are metadata) -> the config;
  unknown keys and unported values are errors that name them."""
  name = cfg.get("_class_name", "UNet2DConditionModel")
  if name != "UNet2DConditionModel":
    raise ValueError(f"_class_name {name!r}, expected 'UNet2DConditionModel' (the unet/ folder "
                     "of a Stable Diffusion repository)")
  values = {k: v for k, v in cfg.items() if not k.startswith("_")}
  problems = _fixed_problems(values)
  if problems:
    raise ValueError("SD U-Net config not supported: " + "; ".join(problems))
  return from_fields(UNet2DConditionConfig, values, "diffusers SD U-Net")
