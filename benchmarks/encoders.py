"""T5 v1.1 encoder and CLIP vision encoder: JAX (jit) vs the transformers reference, same process.

  python -m benchmarks.encoders [--t5_layers 4] [--t5_dim 512] [--clip_layers 4] [--batch 2]

Random weights at a reduced width/depth (full-size shapes are the presets; on CPU they take
minutes). Prints compile time, steady-state time per call for both (alternating, medians and
min/max, load average: benchmarks/harness.py), the ratio, and the max abs
difference so a fast wrong answer cannot pass unnoticed. On a GPU pass --dtype bfloat16.
"""
import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
import transformers

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import harness  # noqa: E402
from conversion import clip_vision, t5_encoder  # noqa: E402
from conversion.mapping import DictSource, convert, unflatten  # noqa: E402
from sem_repa_jax.models.encoders import clip, t5  # noqa: E402


def _time(jax_fn, torch_fn, repeats, title):
  """Medians of the two, in turns (benchmarks/harness.py); prints the table, returns the medians."""
  with torch.no_grad():
    res = harness.alternate({"jax": jax_fn, "torch": torch_fn}, repeats=repeats)
  print(harness.table(res, baseline="torch", title=title))
  return res["jax"].median, res["torch"].median


def bench_t5(args):
  cfg = transformers.T5Config(vocab_size=32128, d_model=args.t5_dim, d_kv=64,
                              d_ff=args.t5_dim * 5 // 2, num_layers=args.t5_layers,
                              num_heads=args.t5_dim // 64, feed_forward_proj="gated-gelu",
                              dropout_rate=0.0)
  model = transformers.T5EncoderModel(cfg).eval()
  ours = t5.config_from_transformers(cfg.to_dict())
  module = t5.T5Encoder(ours, dtype=jnp.dtype(args.dtype), attention=args.attention)
  state = {k: v.numpy() for k, v in model.state_dict().items()
           if k != "encoder.embed_tokens.weight"}
  target = t5_encoder.target_shapes(t5.T5Encoder(ours))
  variables = unflatten(convert(DictSource(state), t5_encoder.rules(ours), target))
  ids = np.random.default_rng(0).integers(0, 32128, (args.batch, 226))
  apply = jax.jit(module.apply)
  start = time.perf_counter()
  out = jax.block_until_ready(apply(variables, jnp.asarray(ids, jnp.int32)))
  compile_s = time.perf_counter() - start
  tid = torch.from_numpy(ids)
  t_jax, t_torch = _time(lambda: apply(variables, jnp.asarray(ids, jnp.int32)), lambda: model(tid),
                         args.repeats, "T5 encoder, seconds per call")
  with torch.no_grad():
    ref = model(tid).last_hidden_state.numpy()
  err = np.abs(np.asarray(out, np.float32) - ref).max()
  print(f"T5 v1.1 d={args.t5_dim} layers={args.t5_layers} B={args.batch} L=226 {args.dtype}: "
        f"compile {compile_s:.2f}s, jax {t_jax * 1e3:.1f} ms, torch {t_torch * 1e3:.1f} ms, "
        f"torch/jax {t_torch / t_jax:.2f}x, max abs err {err:.2e}")


def bench_clip(args):
  cfg = transformers.CLIPVisionConfig(hidden_size=args.clip_dim, intermediate_size=args.clip_dim * 4,
                                      num_hidden_layers=args.clip_layers,
                                      num_attention_heads=args.clip_dim // 80, patch_size=14,
                                      image_size=224, projection_dim=1024, hidden_act="gelu")
  model = transformers.CLIPVisionModelWithProjection(cfg).eval()
  ours = clip.config_from_transformers(cfg.to_dict())
  module = clip.CLIPVisionEncoder(ours, dtype=jnp.dtype(args.dtype), attention=args.attention)
  state = {k: v.numpy() for k, v in model.state_dict().items()}
  target = clip_vision.target_shapes(clip.CLIPVisionEncoder(ours))
  variables = unflatten(convert(DictSource(state), clip_vision.rules(ours), target))
  pixels = np.random.default_rng(0).standard_normal((args.batch, 224, 224, 3)).astype(np.float32)
  apply = jax.jit(lambda v, x: module.apply(v, x)["image_embeds"])
  start = time.perf_counter()
  out = jax.block_until_ready(apply(variables, jnp.asarray(pixels)))
  compile_s = time.perf_counter() - start
  px = torch.from_numpy(pixels.transpose(0, 3, 1, 2).copy())
  t_jax, t_torch = _time(lambda: apply(variables, jnp.asarray(pixels)), lambda: model(px),
                         args.repeats, "CLIP vision encoder, seconds per call")
  with torch.no_grad():
    ref = model(px).image_embeds.numpy()
  err = np.abs(np.asarray(out, np.float32) - ref).max()
  print(f"CLIP ViT/14 d={args.clip_dim} layers={args.clip_layers} B={args.batch} 224px "
        f"{args.dtype}: compile {compile_s:.2f}s, jax {t_jax * 1e3:.1f} ms, "
        f"torch {t_torch * 1e3:.1f} ms, torch/jax {t_torch / t_jax:.2f}x, max abs err {err:.2e}")


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--t5_layers", type=int, default=4)
  p.add_argument("--t5_dim", type=int, default=512)
  p.add_argument("--clip_layers", type=int, default=4)
  p.add_argument("--clip_dim", type=int, default=640)
  p.add_argument("--batch", type=int, default=2)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--dtype", default="float32")
  p.add_argument("--attention", default="xla")
  args = p.parse_args()
  torch.manual_seed(0)
  print(f"backend {jax.default_backend()}, torch threads {torch.get_num_threads()}")
  bench_t5(args)
  bench_clip(args)


if __name__ == "__main__":
  main()
