"""Optimizer update cost: torch AdamW (fp32) vs our AdamW with fp32 and with 8-bit moments.

`python benchmarks/adam8bit.py [--params_m 16] [--steps 20]`. Prints ms per update and the bytes
of optimizer state. On CPU this measures arithmetic only; the 8-bit gain is memory (4x smaller
moments), the (de)quantization costs extra elementwise work that GPUs hide behind bandwidth.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import torch  # noqa: E402

from sem_repa_jax.training import optimizers  # noqa: E402


def bench_jax(tx, params, grads, steps):
  state = tx.init(params)

  @jax.jit
  def step(p, s, g):
    u, s = tx.update(g, s, p)
    return optax.apply_updates(p, u), s
  params, state = step(params, state, grads)
  jax.block_until_ready(params)
  t = time.perf_counter()
  for _ in range(steps):
    params, state = step(params, state, grads)
  jax.block_until_ready(params)
  return (time.perf_counter() - t) / steps * 1e3, optimizers.state_bytes(state)


def bench_torch(shapes, steps):
  ps = [torch.nn.Parameter(torch.zeros(s)) for s in shapes]
  for p in ps:
    p.grad = torch.randn(p.shape)
  opt = torch.optim.AdamW(ps, lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2)
  opt.step()
  t = time.perf_counter()
  for _ in range(steps):
    opt.step()
  ms = (time.perf_counter() - t) / steps * 1e3
  nbytes = sum(v.numel() * v.element_size() for st in opt.state.values() for v in st.values()
               if torch.is_tensor(v))
  return ms, nbytes


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--params_m", type=float, default=16)
  ap.add_argument("--steps", type=int, default=20)
  a = ap.parse_args()
  side = int(np.sqrt(a.params_m * 1e6 / 4))
  shapes = [(side, side)] * 4
  r = np.random.default_rng(0)
  params = {f"w{i}": jnp.zeros(s, jnp.float32) for i, s in enumerate(shapes)}
  grads = {k: jnp.asarray(r.normal(size=v.shape), jnp.float32) for k, v in params.items()}
  cfg = optimizers.default_config()
  cfg.grad_clip_norm = 0.0
  torch_ms, torch_bytes = bench_torch(shapes, a.steps)
  f32_ms, f32_bytes = bench_jax(optimizers.make_optimizer(cfg)[0], params, grads, a.steps)
  cfg.moments_dtype = "int8"
  i8_ms, i8_bytes = bench_jax(optimizers.make_optimizer(cfg)[0], params, grads, a.steps)
  n = sum(int(np.prod(s)) for s in shapes)
  print(f"{n / 1e6:.1f}M params on {jax.devices()[0].platform}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads)")
  print(f"torch AdamW fp32      {torch_ms:8.1f} ms/update  state {torch_bytes / 2**20:8.1f} MiB")
  print(f"jax AdamW fp32        {f32_ms:8.1f} ms/update  state {f32_bytes / 2**20:8.1f} MiB  "
        f"(x{f32_ms / torch_ms:.2f} torch time)")
  print(f"jax AdamW int8 moments{i8_ms:8.1f} ms/update  state {i8_bytes / 2**20:8.1f} MiB  "
        f"(x{i8_ms / torch_ms:.2f} torch time, x{i8_bytes / f32_bytes:.3f} fp32 state)")


if __name__ == "__main__":
  main()
