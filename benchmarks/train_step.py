"""SemanticREPA stage 2: training-step time and MFU, JAX vs a diffusers PyTorch step (issue 9).

  python -m benchmarks.train_step                        # CPU: 2 layers, 4x32 heads, 3x16x24 latents
  python -m benchmarks.train_step --real 2b --peak-tflops 989     # 49x480x720 on one H100 (bf16)

Three steps on the same synthetic batch, same CogVideoX transformer config, same process:
  JAX backbone  -- the real training API (make_train_state / make_train_step / compile_train_step,
                   AdamW + global-norm clipping) with L_t only: the v-MSE of the I2V backbone.
  torch backbone -- diffusers CogVideoXTransformer3DModel, torch AdamW + clip_grad_norm_, the same
                   L_t: forward on concat(z_t, image latents) channels-first, backward, update.
  JAX SemanticREPA -- the full stage-2 loss of jobs/finetune.py (L_t + lambda_S L_S + lambda_ID L_ID
                   through the frozen SAM / IDM). The PyTorch step has no SAM / IDM, so only the two
                   backbone steps form the ratio; the full step is reported beside them.
Weights are random and independent on the two sides (timing, not parity: see
benchmarks/cogvideox_transformer.py for parity). MFU counts the transformer's matmul FLOPs
analytically (2 x dense params x tokens + 4 S^2 D attention per layer, x3 for forward+backward;
remat recomputation is not counted, as MFU demands).
"""
import argparse
import dataclasses
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import harness  # noqa: E402


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--real", choices=["2b", "5b-i2v"], default=None,
                 help="real shapes: 49x480x720 video (13x60x90 latents), all layers, 226 text "
                      "tokens, bf16 compute, remat 'full' (GPU)")
  p.add_argument("--layers", type=int, default=2)
  p.add_argument("--heads", type=int, default=4)
  p.add_argument("--head-dim", type=int, default=32)
  p.add_argument("--frames", type=int, default=3, help="latent frames")
  p.add_argument("--height", type=int, default=16, help="latent height")
  p.add_argument("--width", type=int, default=24, help="latent width")
  p.add_argument("--text-len", type=int, default=0,
                 help="text tokens (0: records without cached T5 embeddings, the job's default)")
  p.add_argument("--batch", type=int, default=1)
  p.add_argument("--steps", type=int, default=10, help="timed steps per side (after one warm-up)")
  p.add_argument("--dtype", default=None, choices=["float32", "bfloat16"],
                 help="compute dtype (params stay float32; torch uses autocast)")
  p.add_argument("--remat", default=None, help="JAX remat policy (torch: gradient checkpointing "
                                               "unless 'none')")
  p.add_argument("--attention", default="xla", help="JAX attention implementation")
  p.add_argument("--device", default=None, help="torch device (default: cuda if available)")
  p.add_argument("--peak-tflops", type=float, default=None,
                 help="peak dense TFLOP/s of the device for MFU (e.g. 989 for H100 SXM bf16)")
  p.add_argument("--no-full", action="store_true", help="skip the full SemanticREPA step")
  args = p.parse_args(argv)
  if args.real:
    args.frames, args.height, args.width = 13, 60, 90
    args.text_len = 226 if args.text_len == 0 else args.text_len
  args.dtype = args.dtype or ("bfloat16" if args.real else "float32")
  args.remat = args.remat or ("full" if args.real else "none")
  args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
  return args


def semrepa_config(args):
  from configs import semrepa
  c = semrepa.get_config()
  lc = 16
  c.model.latent_channels = lc
  if args.real:
    c.model.backbone_preset = "cogvideox-2b" if args.real == "2b" else "cogvideox-5b-i2v"
    backbone = dict(in_channels=2 * lc, out_channels=lc)     # 2b is text-to-video: add I2V input
    c.model.identity.embed_dim = 512
  else:
    backbone = dict(num_attention_heads=args.heads, attention_head_dim=args.head_dim,
                    num_layers=args.layers, in_channels=2 * lc, out_channels=lc,
                    text_embed_dim=4096, time_embed_dim=512, sample_frames=(args.frames - 1) * 4 + 1,
                    sample_height=args.height, sample_width=args.width,
                    use_rotary_positional_embeddings=True, use_learned_positional_embeddings=False)
  c.model.backbone = backbone
  c.data.batch_size = args.batch
  c.data.text_embeds = args.text_len > 0
  c.dtype, c.param_dtype = args.dtype, "float32"
  c.remat_policy, c.attention = args.remat, args.attention
  c.mesh.shape = (1, 1, 1)
  c.optimizer.warmup_steps = 0
  return c


def synthetic_batch(args, c, text_dim, rng):
  b, f, h, w, lc = args.batch, args.frames, args.height, args.width, c.model.latent_channels
  frames = (f - 1) * c.model.temporal_compression + 1
  d = c.model.identity.embed_dim
  batch = dict(video_latents=rng.standard_normal((b, f, h, w, lc)).astype(np.float32),
               depth_latents=rng.standard_normal((b, f, h, w, lc)).astype(np.float32),
               image_latents=rng.standard_normal((b, 1, h, w, lc)).astype(np.float32),
               face_embeds=rng.standard_normal((b, frames, d)).astype(np.float32),
               face_present=rng.random((b, frames)) < 0.8)
  if args.text_len:
    batch["text_embeds"] = rng.standard_normal(
        (b, args.text_len, text_dim)).astype(np.float32)
  return batch


def backbone_loss_fn(model, config, alphas_cumprod):
  """L_t alone, built like finetune.make_loss_fn (same noise, image dropout, text dropout)."""
  from sem_repa_jax.diffusion import schedules
  from sem_repa_jax.diffusion.losses import v_mse
  from sem_repa_jax.jobs import finetune
  f = config.finetune
  num_t = len(alphas_cumprod)

  def loss_fn(variables, batch, rng):
    z0 = batch["video_latents"]
    b = z0.shape[0]
    k_t, k_eps, k_img, k_txt = jax.random.split(rng, 4)
    t = jax.random.randint(k_t, (b,), 0, num_t)
    eps = jax.random.normal(k_eps, z0.shape, z0.dtype)
    z_t = schedules.add_noise(alphas_cumprod, z0, eps, t)
    x = finetune.model_input(z_t, batch["image_latents"],
                             jax.random.uniform(k_img, (b,)) >= f.image_dropout)
    text = batch.get("text_embeds")
    if text is not None:
      text = jnp.where((jax.random.uniform(k_txt, (b,)) >= f.text_dropout)[:, None, None], text, 0.0)
    v_hat = model.apply(variables, x, text, t, method=model.denoise)
    l_t = v_mse(v_hat, z0, eps, alphas_cumprod, t)
    return l_t, {"loss_t": l_t}
  return loss_fn


def timed(step, n):
  """Median seconds per step after one warm-up (compile) step: benchmarks/harness.py."""
  res = harness.alternate({"step": step}, repeats=n)
  return res["step"]


def jax_step_fn(c, model, loss_fn, batch, init_args, frozen):
  from sem_repa_jax.training import loop, mesh as mesh_lib, optimizers, sharding
  from sem_repa_jax.training.train_state import make_train_state
  mesh = mesh_lib.make_mesh(c, devices=jax.devices()[:1])
  rules = sharding.axis_rules(c)
  tx, schedule = optimizers.make_optimizer(c.optimizer)
  abstract, init = make_train_state(model.init, jax.random.key(0), *init_args, tx=tx, mesh=mesh,
                                    rules=rules, rng=1, frozen_prefixes=frozen)
  step = loop.compile_train_step(loop.make_train_step(loss_fn, schedule), abstract, mesh, rules)
  sharded = sharding.shard_batch(batch, mesh, rules)
  holder = {"state": init()}

  def run():
    holder["state"], metrics = step(holder["state"], sharded)    # the state is donated
    jax.block_until_ready(metrics)
  return run


def torch_step_fn(args, cfg, batch, alphas_cumprod, opt_cfg):
  """One diffusers training step: L_t through CogVideoXTransformer3DModel, AdamW, clipping."""
  from diffusers import CogVideoXTransformer3DModel
  from diffusers.models.embeddings import get_3d_rotary_pos_embed
  from diffusers.pipelines.cogvideo.pipeline_cogvideox import get_resize_crop_region_for_grid
  dev = torch.device(args.device)
  torch.manual_seed(0)
  model = CogVideoXTransformer3DModel(**dataclasses.asdict(cfg)).to(dev).train()
  if args.remat != "none":
    model.enable_gradient_checkpointing()
  opt = torch.optim.AdamW(model.parameters(), lr=opt_cfg.learning_rate, betas=(opt_cfg.b1, opt_cfg.b2),
                          eps=opt_cfg.eps, weight_decay=opt_cfg.weight_decay)
  ab = torch.from_numpy(np.asarray(alphas_cumprod, np.float32)).to(dev)
  cf = lambda a: torch.from_numpy(a).permute(0, 1, 4, 2, 3).contiguous().to(dev)  # (B,F,C,H,W)
  z0, img = cf(batch["video_latents"]), cf(batch["image_latents"])
  b, f, _, h, w = z0.shape
  text = (torch.from_numpy(batch["text_embeds"]).to(dev) if "text_embeds" in batch
          else torch.zeros((b, 0, cfg.text_embed_dim), device=dev))
  rope = None
  if cfg.use_rotary_positional_embeddings:
    p = cfg.patch_size
    crops = get_resize_crop_region_for_grid((h // p, w // p), cfg.sample_width // p,
                                            cfg.sample_height // p)
    rope = tuple(x.to(dev) for x in get_3d_rotary_pos_embed(
        cfg.attention_head_dim, crops, (h // p, w // p), f, device=dev))
  autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.dtype == "bfloat16")
  gen = torch.Generator(dev).manual_seed(0)

  def run():
    t = torch.randint(0, len(alphas_cumprod), (b,), device=dev, generator=gen)
    eps = torch.randn(z0.shape, device=dev, generator=gen)
    a = ab[t].view(b, 1, 1, 1, 1)
    z_t = a.sqrt() * z0 + (1 - a).sqrt() * eps
    keep = (torch.rand((b,), device=dev, generator=gen) >= 0.05).float().view(b, 1, 1, 1, 1)
    cond = torch.cat([img * keep, torch.zeros_like(z0[:, 1:])], dim=1)
    with autocast:
      v_hat = model(torch.cat([z_t, cond], dim=2), text, t, image_rotary_emb=rope,
                    return_dict=False)[0]
    loss = torch.mean((v_hat.float() - (a.sqrt() * eps - (1 - a).sqrt() * z0)) ** 2)
    loss.backward()
    if opt_cfg.grad_clip_norm:
      torch.nn.utils.clip_grad_norm_(model.parameters(), opt_cfg.grad_clip_norm)
    opt.step()
    opt.zero_grad(set_to_none=True)
    if dev.type == "cuda":
      torch.cuda.synchronize()
  return run


def transformer_flops(cfg, batch, frames, height, width, text_len) -> float:
  """Model FLOPs of one forward+backward of the backbone: matmuls only (norms, softmax, RoPE and
  the per-sample timestep MLPs are negligible)."""
  p, pt, d = cfg.patch_size, cfg.patch_t, cfg.inner_dim
  video = (frames // pt) * (height // p) * (width // p)
  s = video + text_len
  per_layer = 2 * 12 * d * d * s + 4 * s * s * d          # qkv+out (4D^2), FF (8D^2); QK^T, AV
  embed = 2 * video * (pt * p * p * cfg.in_channels * d + d * pt * p * p * cfg.out_channels)
  embed += 2 * text_len * cfg.text_embed_dim * d
  return 3.0 * batch * (cfg.num_layers * per_layer + embed)


def main(argv=None):
  return measure(parse_args(argv))


def measure(args, torch_first: bool = False) -> dict:
  """Runs the steps, prints the table, returns the figures. The two backbones cannot run in
  turns (each holds its model, gradients and optimizer state), so each is timed in a block; the
  load average is printed with them. torch_first: the PyTorch step before the JAX ones (on a GPU
  shared with JAX's allocator, which keeps what it has taken, the larger one goes first)."""
  from sem_repa_jax.jobs import finetune
  from sem_repa_jax.methods.semrepa import factory
  from sem_repa_jax.methods.semrepa.model import ALIGNMENT_PREFIXES
  from sem_repa_jax.training import optimizers

  c = semrepa_config(args)
  cfg = factory.backbone_config(c)
  model = factory.build(**factory.module_kwargs(c, with_backbone=True))
  ab = factory.alphas_cumprod(c)
  batch = synthetic_batch(args, c, cfg.text_embed_dim, np.random.default_rng(0))
  z = jnp.zeros((1,) + batch["video_latents"].shape[1:])
  x = finetune.model_input(z, jnp.zeros((1,) + batch["image_latents"].shape[1:]),
                           jnp.ones((1,), bool))
  text = jnp.zeros((1, args.text_len, cfg.text_embed_dim)) if args.text_len else None
  init_args = (z, jnp.zeros((1,), jnp.int32), x, text, None)
  has_buffers = "buffers" in jax.eval_shape(model.init, jax.random.key(0), *init_args)
  frozen = ALIGNMENT_PREFIXES + (("buffers",) if has_buffers else ())

  flops = transformer_flops(cfg, args.batch, args.frames, args.height, args.width, args.text_len)
  n_video = (args.frames // cfg.patch_t) * (args.height // cfg.patch_size) * (args.width //
                                                                             cfg.patch_size)
  print(f"config: {cfg.num_layers} layers, {cfg.num_attention_heads}x{cfg.attention_head_dim} "
        f"heads, latents {args.batch}x{args.frames}x{args.height}x{args.width}x"
        f"{c.model.latent_channels} (+image), {n_video} video + {args.text_len} text tokens, "
        f"{args.dtype} compute / float32 params, remat {args.remat}, JAX {jax.default_backend()}, "
        f"torch {args.device} ({torch.get_num_threads()} threads)")
  print(f"model FLOPs per step (fwd+bwd, matmuls): {flops / 1e9:.3f} GFLOP")

  def jax_backbone():
    return timed(jax_step_fn(c, model, backbone_loss_fn(model, c, ab), batch, init_args, frozen),
                 args.steps)

  def torch_backbone():
    t = timed(torch_step_fn(args, cfg, batch, ab, optimizers.resolve_config(c.optimizer)),
              args.steps)
    if torch.cuda.is_available():
      torch.cuda.empty_cache()
    return t

  rows = {}
  for name, fn in ([("diffusers backbone (L_t)", torch_backbone), ("JAX backbone (L_t)", jax_backbone)]
                   if torch_first else
                   [("JAX backbone (L_t)", jax_backbone), ("diffusers backbone (L_t)", torch_backbone)]):
    rows[name] = fn()
  if not args.no_full:
    full = jax_step_fn(c, model, finetune.make_loss_fn(model, c, ab), batch, init_args, frozen)
    rows["JAX SemanticREPA (L_t+L_S+L_ID)"] = timed(full, args.steps)

  print(harness.table(rows, baseline="diffusers backbone (L_t)", title="seconds per step (medians)"))
  out = {"model_flops": flops, "config": f"{cfg.num_layers} layers, {cfg.num_attention_heads}x"
         f"{cfg.attention_head_dim} heads, latents {args.batch}x{args.frames}x{args.height}x"
         f"{args.width}, {args.text_len} text tokens, {args.dtype}, remat {args.remat}"}
  for name, t in rows.items():
    tflops = flops / t.median / 1e12
    mfu = f"   MFU {100 * tflops / args.peak_tflops:5.1f}%" if args.peak_tflops else ""
    print(f"{name:32s} {t.median:9.4f} s/step   {tflops:8.4f} TFLOP/s (backbone FLOPs){mfu}")
    out[name] = {"step": t, "tflops": tflops}
  jax_s, torch_s = rows["JAX backbone (L_t)"].median, rows["diffusers backbone (L_t)"].median
  out["ratio_jax_over_diffusers"] = jax_s / torch_s
  print(f"backbone step JAX/diffusers time ratio: {jax_s / torch_s:.2f}x (< 1: JAX faster)")
  if not args.no_full:
    full_s = rows["JAX SemanticREPA (L_t+L_S+L_ID)"].median
    print(f"full SemanticREPA step / JAX backbone step: {full_s / jax_s:.2f}x "
          "(cost of the frozen SAM / IDM losses)")
  return out


def suite_entry(smoke: bool) -> dict:
  """benchmarks/gpu_suite.py: the stage-2 backbone step at --real 2b (49x480x720, bf16, full remat),
  2 timed steps per side, PyTorch first; MFU is taken by the suite against its measured peak.
  The full SemanticREPA step is left out to fit the suite's 8 minutes. smoke: 1 layer, 2x16 heads,
  2x8x8 latents, 1 step."""
  argv = (["--layers", "1", "--heads", "2", "--head-dim", "16", "--frames", "2", "--height", "8",
           "--width", "8", "--steps", "1"] if smoke else ["--real", "2b", "--steps", "2"])
  return measure(parse_args(argv + ["--no-full"]), torch_first=True)


if __name__ == "__main__":
  main()
