"""CogVideoX transformer: JAX vs diffusers, forward and forward+backward, same weights and inputs.

  python -m benchmarks.cogvideox_transformer                      # CPU, mid-size config
  python -m benchmarks.cogvideox_transformer --frames 13          # the full 13x30x44 latent
  python -m benchmarks.cogvideox_transformer --real 5b --dtype bfloat16 --device cuda   # GPU

The diffusers model gets random weights, which the converter's rules map into the Flax tree in
memory; the outputs are compared once before timing. RoPE / sincos tables are built outside the
timed region on both sides (the pipeline precomputes them; JAX folds them into the program).
"""
import argparse
import dataclasses
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import harness  # noqa: E402


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--real", choices=["2b", "5b"], default=None,
                 help="real CogVideoX shapes (all layers, 13x60x90 latents); needs a GPU")
  p.add_argument("--layers", type=int, default=4)
  p.add_argument("--heads", type=int, default=8)
  p.add_argument("--head-dim", type=int, default=64)
  p.add_argument("--frames", type=int, default=4, help="latent frames (13 for 49 video frames)")
  p.add_argument("--height", type=int, default=30, help="latent height")
  p.add_argument("--width", type=int, default=44, help="latent width")
  p.add_argument("--text-len", type=int, default=226)
  p.add_argument("--rope", action=argparse.BooleanOptionalAction, default=True,
                 help="5b-style 3D RoPE (default) or 2b-style sincos")
  p.add_argument("--batch", type=int, default=1)
  p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  p.add_argument("--device", default="cpu", help="torch device (cpu or cuda)")
  p.add_argument("--attention", default="xla", help="JAX attention implementation")
  p.add_argument("--remat", default="none", help="JAX remat policy for forward+backward")
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--no-backward", action="store_true")
  return p.parse_args(argv)


def diffusers_kwargs(args) -> dict:
  if args.real:
    from sem_repa_jax.models.cogvideox.transformer import PRESETS
    c = PRESETS["cogvideox-2b" if args.real == "2b" else "cogvideox-5b"]
    return {f.name: getattr(c, f.name) for f in dataclasses.fields(c)}
  return dict(num_attention_heads=args.heads, attention_head_dim=args.head_dim, in_channels=16,
              out_channels=16, time_embed_dim=512, text_embed_dim=4096, num_layers=args.layers,
              sample_height=60, sample_width=90, sample_frames=49, max_text_seq_length=226,
              use_rotary_positional_embeddings=args.rope)


def main(argv=None):
  args = parse_args(argv)
  from diffusers import CogVideoXTransformer3DModel
  from diffusers.models.embeddings import get_3d_rotary_pos_embed
  from diffusers.pipelines.cogvideo.pipeline_cogvideox import get_resize_crop_region_for_grid

  from conversion import cogvideox_transformer as converter
  from conversion.mapping import DictSource, convert, unflatten
  from sem_repa_jax.models.cogvideox.transformer import build, config_from_diffusers

  if args.real:
    args.frames, args.height, args.width = 13, 60, 90
  kw = diffusers_kwargs(args)
  torch.manual_seed(0)
  tdtype = torch.bfloat16 if args.dtype == "bfloat16" else torch.float32
  model = CogVideoXTransformer3DModel(**kw)
  with torch.no_grad():
    for p in model.parameters():
      p.normal_(0, 0.02) if p.ndim > 1 else p.uniform_(0.9, 1.1)
  state = {k: v.float().numpy() for k, v in model.state_dict().items()}
  if args.device != "cpu" or tdtype != torch.float32:
    model = model.to(args.device, tdtype)

  config = config_from_diffusers(dict(model.config))
  module = build({f.name: getattr(config, f.name) for f in dataclasses.fields(config)},
                 dtype=args.dtype, param_dtype=args.dtype, attention=args.attention,
                 remat_policy=args.remat)
  flat = convert(DictSource(state), converter.rules(config), converter.target_shapes(module),
                 dtype=jnp.dtype(args.dtype))
  variables = jax.device_put(unflatten(flat))

  r = np.random.default_rng(0)
  b, f, h, w = args.batch, args.frames, args.height, args.width
  lat = r.standard_normal((b, f, h, w, 16)).astype(np.float32)
  txt = r.standard_normal((b, args.text_len, 4096)).astype(np.float32)
  t = np.full((b,), 500.0, np.float32)
  jl, jt, jts = jnp.asarray(lat, args.dtype), jnp.asarray(txt, args.dtype), jnp.asarray(t)
  tl = torch.from_numpy(lat).permute(0, 1, 4, 2, 3).contiguous().to(args.device, tdtype)
  tt = torch.from_numpy(txt).to(args.device, tdtype)
  tts = torch.from_numpy(t).to(args.device)
  rope = None
  if kw["use_rotary_positional_embeddings"]:
    gh, gw = h // 2, w // 2
    crops = get_resize_crop_region_for_grid((gh, gw), kw["sample_width"] // 2,
                                            kw["sample_height"] // 2)
    rope = tuple(x.to(args.device) for x in get_3d_rotary_pos_embed(
        kw["attention_head_dim"], crops, (gh, gw), f))

  tokens = f * (h // 2) * (w // 2)
  print(f"config: layers {kw['num_layers']}, heads {kw['num_attention_heads']}x"
        f"{kw['attention_head_dim']}, latents {b}x{f}x{h}x{w}, {tokens} video + {args.text_len} "
        f"text tokens, {'RoPE' if rope else 'sincos'}, {args.dtype}, JAX {jax.default_backend()}, "
        f"torch {args.device} ({torch.get_num_threads()} threads)")

  fwd = jax.jit(lambda v, x, c, s: module.apply(v, x, c, s))

  def loss_fn(params, x, c, s):
    return jnp.mean(module.apply({**variables, "params": params}, x, c, s).astype(jnp.float32) ** 2)
  grad = jax.jit(jax.grad(loss_fn))

  def jax_fwd():
    return fwd(variables, jl, jt, jts).block_until_ready()

  def jax_bwd():
    jax.block_until_ready(grad(variables["params"], jl, jt, jts))

  def sync():
    if args.device.startswith("cuda"):
      torch.cuda.synchronize()

  def torch_fwd():
    with torch.no_grad():
      out = model(tl, tt, tts, image_rotary_emb=rope).sample
    sync()
    return out

  def torch_bwd():
    model.zero_grad(set_to_none=True)
    out = model(tl, tt, tts, image_rotary_emb=rope).sample
    (out.float() ** 2).mean().backward()
    sync()

  ours = np.asarray(jax_fwd(), np.float32)
  ref = torch_fwd().float().permute(0, 1, 3, 4, 2).cpu().numpy()
  print(f"parity: max abs err {np.abs(ours - ref).max():.3e} (output max {np.abs(ref).max():.3f})")

  rows = [("forward", jax_fwd, torch_fwd)]
  if not args.no_backward:
    rows.append(("forward+backward", jax_bwd, torch_bwd))
  figures = {}
  for name, j, tch in rows:
    res = harness.alternate({f"{name} JAX": j, f"{name} diffusers": tch}, repeats=args.repeats)
    print(harness.table(res, baseline=f"{name} diffusers", title=f"{name}, seconds per call"))
    figures[name] = dict(jax=res[f"{name} JAX"], diffusers=res[f"{name} diffusers"],
                         ratio=res[f"{name} JAX"].median / res[f"{name} diffusers"].median)
  return figures


def suite_entry(smoke: bool) -> dict:
  """benchmarks/gpu_suite.py: the CogVideoX-5b transformer forward at 13x60x90 latents (17,550
  video + 226 text = 17,776 tokens), random bfloat16 weights initialised on the device, cudnn
  attention; seconds (harness medians), model FLOPs and TFLOP/s. smoke: a 1-layer 2x16-head model
  at 2x8x8 latents on any backend, attention 'auto'. JAX only: the diffusers model at 5b would
  take minutes to build on the host."""
  from benchmarks.train_step import transformer_flops
  from sem_repa_jax.models.cogvideox.transformer import PRESETS, build
  if smoke:
    cfg = dataclasses.replace(PRESETS["cogvideox-5b"], num_layers=1, num_attention_heads=2,
                              attention_head_dim=16, time_embed_dim=16, text_embed_dim=32)
    (f, h, w), text_len, dtype, attention, repeats = (2, 8, 8), 8, "float32", "auto", 2
  else:
    cfg = PRESETS["cogvideox-5b"]
    (f, h, w), text_len, dtype, attention, repeats = (13, 60, 90), 226, "bfloat16", "cudnn", 3
  module = build(dataclasses.asdict(cfg), dtype=dtype, param_dtype=dtype, attention=attention)
  x = jnp.zeros((1, f, h, w, cfg.in_channels), dtype)
  text = jnp.zeros((1, text_len, cfg.text_embed_dim), dtype)
  t = jnp.full((1,), 500, jnp.int32)
  from benchmarks.random_init import random_variables
  variables = random_variables(module, x, text, t)
  x = jax.random.normal(jax.random.key(1), x.shape, dtype)
  fwd = jax.jit(module.apply)
  t0 = time.perf_counter()
  jax.block_until_ready(fwd(variables, x, text, t))
  compile_s = time.perf_counter() - t0
  timing = harness.alternate({"forward": lambda: fwd(variables, x, text, t)}, repeats=repeats,
                             warmup=0)["forward"]
  flops = transformer_flops(cfg, 1, f, h, w, text_len) / 3   # forward only
  tokens = (f // cfg.patch_t) * (h // cfg.patch_size) * (w // cfg.patch_size) + text_len
  return {"config": "cogvideox-5b" + (" (smoke: 1 layer, 2x16 heads)" if smoke else ""),
          "tokens": tokens, "dtype": dtype, "attention": attention, "first_call_s": compile_s,
          "forward": timing, "model_flops": flops, "tflops": flops / timing.median / 1e12}


if __name__ == "__main__":
  main()
