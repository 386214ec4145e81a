"""diffusers CogVideoXTransformer3DModel folder -> sem_repa_jax CogVideoXTransformer3D (Orbax).

SRC is the `transformer/` folder of a CogVideoX diffusers repository: config.json plus one or more
*.safetensors (with their index when sharded). Works without torch, bfloat16 sources included.
"""
from conversion import driver, mapping
from conversion.mapping import Rule
from sem_repa_jax.models.registry import factory_of

KIND = "cogvideox-transformer"
HELP = "CogVideoX 2b/5b/5b-I2V/1.5 transformer (diffusers folder with config.json + safetensors)"
FACTORY = factory_of(KIND)


def rules(config) -> list[Rule]:
  """Source name patterns -> Flax paths for one config (layouts depend on its patch sizes)."""
  c = config
  p, pt, heads, hd = c.patch_size, c.patch_t, c.num_attention_heads, c.attention_head_dim
  cin, cout = c.in_channels, c.out_channels

  def patch_kernel(w):
    # Conv2d (D, C, p, p) or Linear (D, C*pt*p*p), features (C, pt, p, p) -> ((pt, p, p, C), D).
    return w.reshape(w.shape[0], cin, pt, p, p).transpose(2, 3, 4, 1, 0).reshape(-1, w.shape[0])

  def out_kernel(w):   # Linear (C*pt*p*p ordered (C, pt, p, p), D) -> (D, (pt, p, p, C))
    return w.reshape(cout, pt, p, p, -1).transpose(4, 1, 2, 3, 0).reshape(w.shape[-1], -1)

  def out_bias(b):
    return b.reshape(cout, pt, p, p).transpose(1, 2, 3, 0).reshape(-1)

  def qkv_kernel(w):   # (heads*hd, D) -> (D, heads, hd)
    return w.T.reshape(w.shape[1], heads, hd)

  def qkv_bias(b):
    return b.reshape(heads, hd)

  def to_out_kernel(w):   # (D, heads*hd) -> (heads, hd, D)
    return w.T.reshape(heads, hd, w.shape[0])

  blk = r"transformer_blocks\.(\d+)\."
  tb = "params/transformer_blocks/"
  return [
      Rule(r"patch_embed\.proj\.weight", "params/patch_embed/proj/kernel", patch_kernel),
      Rule(r"patch_embed\.proj\.bias", "params/patch_embed/proj/bias"),
      Rule(r"patch_embed\.text_proj\.weight", "params/patch_embed/text_proj/kernel", mapping.linear),
      Rule(r"patch_embed\.text_proj\.bias", "params/patch_embed/text_proj/bias"),
      Rule(r"patch_embed\.pos_embedding", "buffers/patch_embed/pos_embedding"),
      Rule(r"(time|ofs)_embedding\.(linear_[12])\.weight", r"params/\1_embedding/\2/kernel",
           mapping.linear),
      Rule(r"(time|ofs)_embedding\.(linear_[12])\.bias", r"params/\1_embedding/\2/bias"),
      Rule(blk + r"(norm[12])\.linear\.weight", tb + r"\2/linear/kernel", mapping.linear, stack=1),
      Rule(blk + r"(norm[12])\.linear\.bias", tb + r"\2/linear/bias", stack=1),
      Rule(blk + r"(norm[12])\.norm\.weight", tb + r"\2/norm/scale", stack=1),
      Rule(blk + r"(norm[12])\.norm\.bias", tb + r"\2/norm/bias", stack=1),
      Rule(blk + r"attn1\.(norm_[qk])\.weight", tb + r"attn1/\2/scale", stack=1),
      Rule(blk + r"attn1\.(norm_[qk])\.bias", tb + r"attn1/\2/bias", stack=1),
      Rule(blk + r"attn1\.(to_[qkv])\.weight", tb + r"attn1/\2/kernel", qkv_kernel, stack=1),
      Rule(blk + r"attn1\.(to_[qkv])\.bias", tb + r"attn1/\2/bias", qkv_bias, stack=1),
      Rule(blk + r"attn1\.to_out\.0\.weight", tb + "attn1/to_out/kernel", to_out_kernel, stack=1),
      Rule(blk + r"attn1\.to_out\.0\.bias", tb + "attn1/to_out/bias", stack=1),
      Rule(blk + r"ff\.net\.0\.proj\.weight", tb + "ff/proj_in/kernel", mapping.linear, stack=1),
      Rule(blk + r"ff\.net\.0\.proj\.bias", tb + "ff/proj_in/bias", stack=1),
      Rule(blk + r"ff\.net\.2\.weight", tb + "ff/proj_out/kernel", mapping.linear, stack=1),
      Rule(blk + r"ff\.net\.2\.bias", tb + "ff/proj_out/bias", stack=1),
      Rule(r"norm_final\.weight", "params/norm_final/scale"),
      Rule(r"norm_final\.bias", "params/norm_final/bias"),
      Rule(r"norm_out\.linear\.weight", "params/norm_out/linear/kernel", mapping.linear),
      Rule(r"norm_out\.linear\.bias", "params/norm_out/linear/bias"),
      Rule(r"norm_out\.norm\.weight", "params/norm_out/norm/scale"),
      Rule(r"norm_out\.norm\.bias", "params/norm_out/norm/bias"),
      Rule(r"proj_out\.weight", "params/proj_out/kernel", out_kernel),
      Rule(r"proj_out\.bias", "params/proj_out/bias", out_bias),
  ]


def target_shapes(module) -> dict:
  """Flat {path: shape} of every variable the module has, found abstractly (nothing allocated)."""
  from sem_repa_jax.models.cogvideox.transformer import example_inputs
  return mapping.abstract_shapes(module.init, **example_inputs(module.config))


def convert(src: str, dst: str, dtype: str = "float32", variant=None) -> str:
  from sem_repa_jax.models.cogvideox.transformer import config_from_diffusers
  return driver.convert(src, dst, dtype, kind=KIND, read=driver.folder(config_from_diffusers),
                        rules=rules, target_shapes=target_shapes, variant=variant)
