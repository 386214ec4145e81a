"""Attention alone: our kernels vs PyTorch's scaled_dot_product_attention, same inputs, in turns.

  ./run.sh bench attention                                  # 4,516 tokens (13x30x44 + 226), 8x64
  ./run.sh bench attention --tokens 1024 --kernels xla blockwise
  ./run.sh bench attention --blocks 128x512 256x256 256x512  # the blockwise block-size sweep

Self-attention over --tokens tokens, float32 by default, batch 1, forward only (--grad adds the
backward of sum(out * cotangent)). Outputs are compared with the xla kernel before timing.
"""
import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import harness  # noqa: E402
from sem_repa_jax.nn.attention import dot_product_attention  # noqa: E402
from sem_repa_jax.nn.blockwise_attention import blockwise_attention  # noqa: E402


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--tokens", type=int, default=4516, help="13x30x44 latents: 4,290 video + 226 text")
  p.add_argument("--kv-tokens", type=int, default=0, help="key/value tokens (default: --tokens)")
  p.add_argument("--heads", type=int, default=8)
  p.add_argument("--head-dim", type=int, default=64)
  p.add_argument("--batch", type=int, default=1)
  p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  p.add_argument("--kernels", nargs="+", default=["xla", "blockwise"])
  p.add_argument("--blocks", nargs="*", default=[], metavar="QxK",
                 help="extra blockwise runs at these block sizes, e.g. 256x512")
  p.add_argument("--grad", action="store_true", help="time forward+backward instead")
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--json", default="", help="also write the figures to this JSON file")
  return p.parse_args(argv)


def _jax_fn(attend, q, k, v, grad):
  if not grad:
    f = jax.jit(attend)
    return lambda: f(q, k, v)
  cot = jnp.cos(jnp.arange(q.shape[-1], dtype=jnp.float32))
  g = jax.jit(jax.grad(lambda q, k, v: jnp.sum(attend(q, k, v).astype(jnp.float32) * cot),
                       (0, 1, 2)))
  return lambda: g(q, k, v)


def main(argv=None):
  args = parse_args(argv)
  lk = args.kv_tokens or args.tokens
  r = np.random.default_rng(0)
  shapes = [(args.batch, args.tokens, args.heads, args.head_dim)] + \
           [(args.batch, lk, args.heads, args.head_dim)] * 2
  arrays = [r.standard_normal(s).astype(np.float32) for s in shapes]
  q, k, v = (jnp.asarray(a, args.dtype) for a in arrays)
  tdtype = torch.bfloat16 if args.dtype == "bfloat16" else torch.float32
  tq, tk, tv = (torch.from_numpy(a).transpose(1, 2).contiguous().to(tdtype).requires_grad_(args.grad)
                for a in arrays)

  fns = {}
  for name in args.kernels:
    fns[name] = _jax_fn(lambda q, k, v, name=name: dot_product_attention(
        q, k, v, implementation=name), q, k, v, args.grad)
  for spec in args.blocks:
    bq, bk = (int(x) for x in spec.lower().split("x"))
    fns[f"blockwise {bq}x{bk}"] = _jax_fn(lambda q, k, v, bq=bq, bk=bk: blockwise_attention(
        q, k, v, block_q=bq, block_k=bk), q, k, v, args.grad)

  def torch_sdpa():
    if not args.grad:
      with torch.no_grad():
        return torch.nn.functional.scaled_dot_product_attention(tq, tk, tv)
    out = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv)
    (out.float() * torch.cos(torch.arange(args.head_dim, dtype=torch.float32))).sum().backward()
    return out
  fns["torch sdpa"] = torch_sdpa

  if not args.grad:
    ref = np.asarray(dot_product_attention(q, k, v, implementation="xla"), np.float32)
    for name, fn in fns.items():
      out = fn()
      out = out.detach().float().transpose(1, 2).numpy() if name == "torch sdpa" else out
      print(f"max |{name} - xla| {np.abs(np.asarray(out, np.float32) - ref).max():.2e}")
  res = harness.alternate(fns, repeats=args.repeats)
  print(harness.table(res, baseline="torch sdpa", title=(
      f"attention {'forward+backward' if args.grad else 'forward'}: {args.batch}x{args.tokens}"
      f"{'' if lk == args.tokens else f'x{lk}'} tokens, {args.heads}x{args.head_dim} heads, "
      f"{args.dtype}, JAX {jax.default_backend()}, torch {torch.get_num_threads()} threads")))
  if args.json:
    harness.write_json(args.json, {"args": vars(args), "timings": res})
  return res


if __name__ == "__main__":
  main()
