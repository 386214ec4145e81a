"""CLIP vision transformer with projection (OpenCLIP ViT-H/14 = SVD's image_encoder), matching
transformers' CLIPVisionModelWithProjection.

Patches by a bias-free strided conv, a learned class token and absolute position embedding, a
LayerNorm BEFORE the encoder (pre_layrnorm), pre-norm encoder layers, a LayerNorm on the class token
only, and a bias-free projection: image_embeds is what SVD conditions on.
"""
import dataclasses
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from sem_repa_jax.models.encoders.activations import get_activation
from sem_repa_jax.nn.attention import dot_product_attention
from sem_repa_jax.nn.convs import Conv2D
from sem_repa_jax.nn.dense import Projection
from sem_repa_jax.nn.norms import LayerNorm
from sem_repa_jax.models.config_fields import from_fields
from sem_repa_jax.nn.partitioning import as_dtype, partitioned
from sem_repa_jax.nn.stacking import scanned


@dataclass(frozen=True)
class CLIPVisionConfig:
  hidden_size: int = 1280
  intermediate_size: int = 5120
  num_hidden_layers: int = 32
  num_attention_heads: int = 16
  patch_size: int = 14
  image_size: int = 224
  num_channels: int = 3
  projection_dim: int = 1024
  hidden_act: str = "gelu"
  layer_norm_eps: float = 1e-5


# laion/CLIP-ViT-H-14 as shipped in stable-video-diffusion's image_encoder/ folder.
VIT_H_14 = CLIPVisionConfig()
PRESETS = {"vit-h-14": VIT_H_14}


def config_from_transformers(cfg: dict) -> CLIPVisionConfig:
  """From a CLIPVisionConfig config.json (or a full CLIPConfig's vision_config)."""
  if "vision_config" in cfg and "hidden_size" not in cfg:
    cfg = dict(cfg["vision_config"], projection_dim=cfg.get("projection_dim", 512))
  defaults = CLIPVisionConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                              num_attention_heads=12, patch_size=32, projection_dim=512,
                              hidden_act="quick_gelu")   # transformers' CLIPVisionConfig defaults
  kwargs = {}
  for f in dataclasses.fields(CLIPVisionConfig):
    default = getattr(defaults, f.name)
    kwargs[f.name] = type(default)(cfg.get(f.name, default))
  if kwargs["hidden_size"] % kwargs["num_attention_heads"]:
    raise ValueError(f"hidden_size {kwargs['hidden_size']} is not a multiple of "
                     f"num_attention_heads {kwargs['num_attention_heads']}")
  return CLIPVisionConfig(**kwargs)


def _layer_norm(config, dtype, param_dtype, name):
  return LayerNorm(config.layer_norm_eps, dtype=dtype, param_dtype=param_dtype, name=name)


class CLIPEncoderLayer(nn.Module):
  """One pre-norm block of either CLIP tower: `(x, mask=None) -> (x, None)`.

  config: a CLIPVisionConfig or CLIPTextConfig (the fields read are the same). mask: boolean,
  broadcastable to (batch, heads, length, length), True where attention is allowed (the text
  tower's causal and padding mask); None attends everywhere (the vision tower).
  """
  config: Any
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  attention: str = "xla"

  @nn.compact
  def __call__(self, x, mask=None):
    c = self.config
    heads = (c.num_attention_heads, c.hidden_size // c.num_attention_heads)

    def dense(name, features, contract, axes, bias_axes):
      return Projection(features, axes, contract, bias_axes, dtype=self.dtype,
                        param_dtype=self.param_dtype, name=name)

    h = _layer_norm(c, self.dtype, self.param_dtype, "layer_norm1")(x)
    q = dense("q_proj", heads, 1, ("embed", "heads", "kv"), ("heads", "kv"))(h)
    k = dense("k_proj", heads, 1, ("embed", "heads", "kv"), ("heads", "kv"))(h)
    v = dense("v_proj", heads, 1, ("embed", "heads", "kv"), ("heads", "kv"))(h)
    a = dot_product_attention(q, k, v, implementation=self.attention, mask=mask)
    x = x + dense("out_proj", (c.hidden_size,), 2, ("heads", "kv", "embed"), ("embed",))(a)
    x = nn.with_logical_constraint(x, ("batch", "length", "embed"))

    h = _layer_norm(c, self.dtype, self.param_dtype, "layer_norm2")(x)
    h = get_activation(c.hidden_act)(dense("fc1", (c.intermediate_size,), 1, ("embed", "mlp"),
                                           ("mlp",))(h))
    h = nn.with_logical_constraint(h, ("batch", "length", "mlp"))
    x = x + dense("fc2", (c.hidden_size,), 1, ("mlp", "embed"), ("embed",))(h)
    return nn.with_logical_constraint(x, ("batch", "length", "embed")), None


class CLIPVisionEncoder(nn.Module):
  """`apply(v, pixels (B, S, S, 3) CLIP-normalized) -> dict(last_hidden_state, pooled, image_embeds)`.

  last_hidden_state (B, 1 + (S/P)^2, D) before the post-LayerNorm; pooled: the post-LayerNormed class
  token (transformers' pooler_output); image_embeds (B, projection_dim).
  """
  config: CLIPVisionConfig
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  attention: str = "xla"
  remat_policy: str = "none"

  @nn.compact
  def __call__(self, pixels):
    c = self.config
    want = (c.image_size, c.image_size, c.num_channels)
    if pixels.ndim != 4 or tuple(pixels.shape[1:]) != want:
      raise ValueError(f"pixels: expected (batch, {want[0]}, {want[1]}, {want[2]}) channels-last, "
                       f"got shape {pixels.shape}")
    d = c.hidden_size
    patches = Conv2D(d, (c.patch_size, c.patch_size), c.patch_size, 0, use_bias=False,
                     kernel_init=nn.initializers.normal(0.02),
                     kernel_axes=(None, None, None, "embed"), dtype=self.dtype,
                     param_dtype=self.param_dtype, name="patch_embedding")(pixels)
    b = patches.shape[0]
    patches = patches.reshape(b, -1, d)   # row-major over (h, w), as torch's flatten(2)
    cls = self.param("class_embedding", partitioned(nn.initializers.normal(1.0), ("embed",)),
                     (d,), self.param_dtype)
    pos = self.param("position_embedding", partitioned(nn.initializers.normal(0.02),
                                                        (None, "embed")),
                     (patches.shape[1] + 1, d), self.param_dtype)
    x = jnp.concatenate([jnp.broadcast_to(cls.astype(self.dtype), (b, 1, d)), patches], axis=1)
    x = x + pos.astype(self.dtype)[None]
    x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
    x = _layer_norm(c, self.dtype, self.param_dtype, "pre_layrnorm")(x)

    stack = scanned(CLIPEncoderLayer, c.num_hidden_layers, self.remat_policy)
    x, _ = stack(c, self.dtype, self.param_dtype, self.attention, name="layers")(x)

    pooled = _layer_norm(c, self.dtype, self.param_dtype, "post_layernorm")(x[:, 0])
    image_embeds = nn.Dense(c.projection_dim, use_bias=False, dtype=self.dtype,
                            param_dtype=self.param_dtype, name="visual_projection",
                            kernel_init=partitioned(nn.initializers.normal(d ** -0.5),
                                                     ("embed", None)))(pooled)
    return {"last_hidden_state": x, "pooled": pooled, "image_embeds": image_embeds}


def build_clip_vision(config: dict, dtype: str = "float32", param_dtype: str = "float32",
                      attention: str = "xla", remat_policy: str = "none") -> CLIPVisionEncoder:
  """Factory from JSON-able arguments (used by load_pretrained on converted folders)."""
  return CLIPVisionEncoder(from_fields(CLIPVisionConfig, config, "CLIP vision"), dtype=as_dtype(dtype),
                           param_dtype=as_dtype(param_dtype), attention=attention,
                           remat_policy=remat_policy)
