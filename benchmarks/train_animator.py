"""StableAnimator training step: the job's JAX step vs the official step in PyTorch (issue 17).

  python -m benchmarks.train_animator --size tiny      # CPU, seconds; same weights, loss compared
  python -m benchmarks.train_animator                  # CPU, mid size: a few seconds a step
  python -m benchmarks.train_animator --size 512 --peak-tflops 989          # GPU: 16x512x512
  python -m benchmarks.train_animator --size 576x1024 --no-torch            # GPU: JAX alone
  XLA_FLAGS=--xla_force_host_platform_device_count=8 \\
    python -m benchmarks.train_animator --size 576x1024 --memory-only      # fsdp-8 memory, CPU
  [--threads N]: CPU threads of torch and XLA (default 1; 0: the libraries' defaults)

JAX: the step of jobs/train_animator.py as `fit` builds it (build_model, objective_config,
make_loss_fn, init_args, frozen_outside over config.train.trainable, make_train_state,
loop.compile_train_step), with the config's dtype, remat and attention; batch and mesh of one
device. PyTorch: benchmarks/stableanimator_torch.py (diffusers' SVD U-Net with the official
adapter processors, PoseNet, FusionFaceId, train.py's loss), AdamW with the job's settings and
global-norm clipping over the official trainable set (PoseNet, face encoder, every U-Net
'attentions' parameter); bf16 autocast and gradient checkpointing where the config has bf16 and
remat. Both run the same draws (the JAX step-0 sigmas, noise and dropout uniforms; the torch
side reuses them every step, which costs the same).

tiny and mid: the torch networks are randomized and converted (.pth -> `python -m conversion` ->
the job's loading), so the step-0 losses must agree (reported). 512 / 576x1024: independent
random weights (timing only). The two sides alternate (benchmarks/harness.py). FLOPs: XLA's cost
analysis of the same step lowered without remat and with XLA attention (model FLOPs, what MFU
divides); `compiled_flops` is what the compiled program executes (remat recomputation included;
cudnn attention not counted). Memory: the compiled program's memory analysis per device, and with
8 devices also for the config's fsdp-8 mesh (one example per device).
"""
import argparse
import dataclasses
import importlib
import os
import pathlib
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import svd_models  # noqa: E402

if __name__ == "__main__":
  THREADS = svd_models.threads_from_argv(sys.argv)   # before jax is imported

import numpy as np  # noqa: E402

from benchmarks import harness  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Size:
  config: str          # configs/<config>.py
  unet: dict           # diffusers UNetSpatioTemporalConditionModel kwargs (SVD-XT: {})
  width: int           # cross_attention_dim = CLIP width = face token width
  id_dim: int          # ArcFace embedding width
  frames: int
  latent_hw: tuple     # latent (h, w); pose images are 8x that (PoseNet compression)
  batch: int
  same_weights: bool   # torch weights converted into the JAX state (loss parity)


# The SVD benchmarks' tiny and mid U-Nets with a context of 128 (two face-perceiver heads of 64);
# tiny is the training tests' (tests/stableanimator_models.py).
_UNET = {k: dict(svd_models.SIZES[k].unet, cross_attention_dim=128) for k in ("tiny", "mid")}
SIZES = {
    "tiny": Size("stableanimator", _UNET["tiny"], 128, 16, 2, (8, 8), 2, True),
    "mid": Size("stableanimator", _UNET["mid"], 128, 64, 8, (16, 24), 2, True),   # svd_unet mid
    "512": Size("stableanimator_512", {}, 1024, 512, 16, (64, 64), 1, False),
    "576x1024": Size("stableanimator_576x1024", {}, 1024, 512, 16, (128, 72), 1, False),  # portrait
}
FSDP = 8


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--size", choices=sorted(SIZES), default="mid")
  p.add_argument("--repeats", type=int, default=3, help="timed steps per side (after a warm-up)")
  p.add_argument("--dtype", choices=["float32", "bfloat16"], default=None,
                 help="compute dtype (default: the config's; params stay float32)")
  p.add_argument("--remat", default=None, help="remat policy (default: the config's)")
  p.add_argument("--peak-tflops", type=float, default=None,
                 help="peak dense TFLOP/s of the device for MFU (e.g. 989 for H100 SXM bf16)")
  p.add_argument("--no-torch", action="store_true", help="the JAX step alone")
  p.add_argument("--memory-only", action="store_true",
                 help="compile only (abstract state): memory and FLOPs, no step runs")
  p.add_argument("--no-fsdp8", action="store_true",
                 help="skip the fsdp-8 memory analysis (done when 8 devices are there)")
  p.add_argument("--threads", type=int, default=1)
  p.add_argument("--json", default="", help="also write the figures here")
  return p.parse_args(argv)


def job_config(size: Size, batch: int, mesh_shape=(1, 1, 1), dtype=None, remat=None, dirs=None):
  c = importlib.import_module(f"configs.{size.config}").get_config()
  if size.config == "stableanimator":   # the tiny config's U-Net overrides -> this size's
    c.model.unet.update({k: v for k, v in size.unet.items() if k != "num_frames"})
  c.model.face_encoder = type(c.model.face_encoder)(dict(
      id_embeddings_dim=size.id_dim, proj_hidden_dim=2 * size.id_dim))
  for field, path in (dirs or {}).items():
    c.model[field] = path
  c.data.batch_size = batch
  c.mesh.shape = tuple(mesh_shape)
  c.dtype = dtype or c.dtype
  c.remat_policy = remat or c.remat_policy
  return c


def synthetic_batch(size: Size, batch: int, seed: int = 0) -> dict:
  """Records' fields (objective.BATCH_FIELDS) at this size, random."""
  r = np.random.default_rng(seed)
  (h, w), f = size.latent_hw, size.frames
  f32 = lambda *s: r.standard_normal(s).astype(np.float32)
  return {"video_latents": f32(batch, f, h, w, 4), "reference_latents": 0.2 * f32(batch, h, w, 4),
          "clip_embeds": f32(batch, size.width), "id_embeds": 5 * f32(batch, size.id_dim),
          "pose_images": r.integers(0, 256, (batch, f, 8 * h, 8 * w, 3), np.uint8),
          "face_weight_masks": r.integers(0, 2, (batch, f, h, w), np.uint8)}


def abstract_batch(batch: dict, mesh, rules) -> dict:
  """ShapeDtypeStructs of `batch` with the shardings shard_batch gives them on `mesh`."""
  import jax
  from sem_repa_jax.training import sharding
  return {k: jax.ShapeDtypeStruct(v.shape, v.dtype,
                                  sharding=sharding.batch_sharding(mesh, rules, v.ndim))
          for k, v in batch.items()}


def job_step(c, batch: dict, devices, loaded: bool = False):
  """(model, abstract state, init, the job's train_step, compiled TrainStep, mesh, rules): what
  fit() builds for jobs/train_animator.py, on `devices`. loaded: every variable is then loaded
  from the config's folders (prepare_state), so init() fills the state with zeros instead of
  compiling the model's init (half a minute of a tiny CPU run)."""
  import jax
  from sem_repa_jax.jobs import train_animator
  from sem_repa_jax.training import loop, mesh as mesh_lib, optimizers, sharding
  from sem_repa_jax.training.train_state import frozen_outside, make_train_state
  model = train_animator.build_model(c)
  example = {k: np.zeros((1,) + v.shape[1:], v.dtype) for k, v in batch.items()}
  train_animator.check_example(model, example, "the synthetic batch")
  args = train_animator.init_args(model, example)
  frozen = frozen_outside(jax.eval_shape(model.init, jax.random.key(0), *args), c.train.trainable)
  mesh = mesh_lib.make_mesh(c, devices=devices)
  rules = sharding.axis_rules(c)
  tx, schedule = optimizers.make_optimizer(c.optimizer)
  init_fn = _zeros_init(model) if loaded else model.init
  abstract, init = make_train_state(init_fn, jax.random.key(c.seed), *args, tx=tx, mesh=mesh,
                                    rules=rules, rng=c.seed + 1, frozen_prefixes=frozen)
  train_step = loop.make_train_step(
      train_animator.make_loss_fn(model, train_animator.objective_config(c)), schedule)
  step = loop.compile_train_step(train_step, abstract, mesh, rules)
  return model, abstract, init, train_step, step, mesh, rules


def _zeros_init(model):
  import jax
  import jax.numpy as jnp
  def init(key, *args):   # the boxes (logical axes) of model.init, zeros inside
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                        jax.eval_shape(model.init, key, *args))
  return init


def model_flops(size: Size, c, batch: dict) -> float:
  """XLA's FLOP count of the step lowered (not compiled) without remat and with XLA attention:
  forward + backward + update once, as MFU counts them."""
  import flax.linen as nn
  import jax
  plain = job_config(size, c.data.batch_size, dtype=c.dtype, remat="none",
                     dirs={f: c.model[f] for f in ("unet_dir", "pose_net_dir", "face_encoder_dir")})
  plain.attention = "xla"
  _, abstract, _, train_step, _, mesh, rules = job_step(plain, batch, jax.devices()[:1])

  def step(state, b):
    with nn.logical_axis_rules(rules):
      return train_step(state, b)
  with jax.set_mesh(mesh):
    lowered = jax.jit(step).lower(abstract, abstract_batch(batch, mesh, rules))
  return float(lowered.cost_analysis()["flops"])


def memory(figures: dict) -> dict:
  """The compiled memory figures with their per-device total (arguments + outputs not aliased to
  them + temporaries), in bytes."""
  out = {k: v for k, v in figures.items() if k.endswith("_bytes")}
  if {"argument_bytes", "output_bytes", "alias_bytes", "temp_bytes"} <= out.keys():
    out["total_bytes"] = (out["argument_bytes"] + out["output_bytes"] - out["alias_bytes"]
                          + out["temp_bytes"])
  return out


def fsdp_memory(size: Size, args, per_device_batch: int) -> dict:
  """The step compiled for the mesh (1, 8, 1): per-device memory at fsdp 8, one example (of the
  per-device batch) per device; nothing is allocated."""
  import jax
  if len(jax.devices()) < FSDP:
    return {"status": f"needs {FSDP} devices, {len(jax.devices())} here (on CPU: XLA_FLAGS="
                      f"--xla_force_host_platform_device_count={FSDP})"}
  batch = synthetic_batch(size, FSDP * per_device_batch)
  c = job_config(size, len(batch["video_latents"]), (1, FSDP, 1), args.dtype, args.remat)
  _, abstract, _, _, step, mesh, rules = job_step(c, batch, jax.devices()[:FSDP])
  return memory(step.compile(abstract_batch(batch, mesh, rules)))


def torch_models(size: Size):
  """(unet, pose_net, face_encoder): randomized as the tests' (same_weights sizes), else with
  torch's default initialization."""
  from benchmarks import stableanimator_torch as ref
  if size.same_weights:
    from tests import stableanimator_models   # the tests' randomization (needs pytest)
    return stableanimator_models.torch_models(size.unet, size.width, size.id_dim)
  unet = ref.stableanimator_unet(**size.unet)
  return (unet, ref.TorchPoseNet(unet.config.block_out_channels[0]),
          ref.TorchFusionFaceId(dim=size.width, id_dim=size.id_dim, clip_dim=size.width))


def torch_step_fn(models, inputs: dict, c, device: str):
  """One official training step: train.py's loss, backward, clipping, AdamW; returns the loss."""
  import torch
  from benchmarks.stableanimator_torch import official_loss, official_trainable
  from sem_repa_jax.training import optimizers
  models = tuple(m.to(device).train() for m in models)
  if c.remat_policy != "none":
    models[0].enable_gradient_checkpointing()
  trained = official_trainable(models)
  o = optimizers.resolve_config(c.optimizer)
  opt = torch.optim.AdamW(trained, lr=o.learning_rate, betas=(o.b1, o.b2), eps=o.eps,
                          weight_decay=o.weight_decay)
  autocast = torch.autocast(torch.device(device).type, dtype=torch.bfloat16,
                            enabled=c.dtype == "bfloat16")

  def step():
    with autocast:
      loss = official_loss(models, inputs)
    loss.backward()
    if o.grad_clip_norm:
      torch.nn.utils.clip_grad_norm_(trained, o.grad_clip_norm)
    opt.step()
    opt.zero_grad(set_to_none=True)
    svd_models.sync(device)
    return loss.item()
  return step


def measure(size_name: str, args) -> dict:
  """Builds both steps at SIZES[size_name], checks the step-0 losses (same-weight sizes), times
  them alternately and returns the figures (also printed)."""
  import jax
  import torch
  from benchmarks.stableanimator_torch import official_inputs
  from sem_repa_jax.jobs import train_animator
  from sem_repa_jax.methods.stableanimator.objective import draw
  from sem_repa_jax.training import sharding
  svd_models.set_torch_threads(args.threads)
  size = SIZES[size_name]
  batch = synthetic_batch(size, size.batch)
  device = "cuda" if torch.cuda.is_available() else "cpu"
  run_torch = not (args.no_torch or args.memory_only)
  with tempfile.TemporaryDirectory() as tmp:
    models, dirs = None, None
    if run_torch or size.same_weights:
      models = torch_models(size)
    if size.same_weights:
      from tests.stableanimator_models import convert_all
      dirs = convert_all(pathlib.Path(tmp), models)
    c = job_config(size, size.batch, dtype=args.dtype, remat=args.remat, dirs=dirs)
    _, abstract, init, _, step, mesh, rules = job_step(c, batch, jax.devices()[:1], bool(dirs))
    t0 = time.perf_counter()
    out = {"benchmark": "train_animator", "size": size_name,
           "shape": f"{size.batch}x{size.frames}x{8 * size.latent_hw[0]}x{8 * size.latent_hw[1]}",
           "dtype": c.dtype, "remat": c.remat_policy, "attention": c.attention,
           "device": str(jax.devices()[0].device_kind)}
    out["memory"] = memory(step.compile(abstract_batch(batch, mesh, rules)))
    out["compile_s"] = time.perf_counter() - t0
    out["compiled_flops"] = float(step.compiled.cost_analysis().get("flops", 0.0))
    out["model_flops"] = model_flops(size, c, batch)
    if not args.no_fsdp8:
      out["fsdp8_memory"] = fsdp_memory(size, args, size.batch)
    if args.memory_only:
      return _report(out, {}, args)
    state = train_animator.prepare_state_fn(c)(init()) if dirs else init()
    sharded = sharding.shard_batch(batch, mesh, rules)
    draws = jax.device_get(draw(jax.random.fold_in(state.rng, 0), sharded["video_latents"],
                                train_animator.objective_config(c)))
    holder = {"state": state}

    def jax_step():
      holder["state"], metrics = step(holder["state"], sharded)   # the state is donated
      return float(metrics["loss"])
    fns = {"jax": jax_step}
    out["loss_step0_jax"] = jax_step()
    if run_torch:
      fns["torch"] = torch_step_fn(models, official_inputs(batch, *draws, device=device), c, device)
      out["loss_step0_torch"] = fns["torch"]()
      out["loss_rel_diff"] = abs(out["loss_step0_jax"] / out["loss_step0_torch"] - 1)
      out["same_weights"] = size.same_weights
    if device == "cuda":
      torch.cuda.reset_peak_memory_stats()
    res = harness.alternate(fns, repeats=args.repeats, warmup=0)   # step 0 warmed both up
    if device == "cuda" and run_torch:
      out["torch_peak_bytes"] = int(torch.cuda.max_memory_allocated())
    stats = jax.devices()[0].memory_stats() or {}   # GPU: since the process started
    if "peak_bytes_in_use" in stats:
      out["jax_peak_bytes"] = int(stats["peak_bytes_in_use"])
  return _report(out, res, args)


def _report(out: dict, res: dict, args) -> dict:
  flops = out["model_flops"]
  m = out["memory"].get("total_bytes")
  print(f"StableAnimator training step, size {out['size']} ({out['shape']}), {out['dtype']} "
        f"compute, remat {out['remat']}, attention {out['attention']}, {out['device']}")
  print(f"model FLOPs per step {flops / 1e12:.4g} TFLOP (compiled, with remat: "
        f"{out['compiled_flops'] / 1e12:.4g}); compile {out['compile_s']:.1f} s; memory per "
        f"device {m / 2 ** 30 if m else float('nan'):.2f} GiB; fsdp-8: " + _fsdp_line(out))
  if "loss_step0_torch" in out:
    print(f"step-0 loss: JAX {out['loss_step0_jax']:.6g}, torch {out['loss_step0_torch']:.6g} "
          f"(relative difference {out['loss_rel_diff']:.1e}"
          f"{'' if out['same_weights'] else ', independent weights'})")
  if res:
    print(harness.table(res, baseline="torch" if "torch" in res else None,
                        title="seconds per step (medians)"))
    out.update(svd_models.timing_figures(res, baseline="torch"))
    for name, t in res.items():
      row = out[name] = dict(out[name], tflops=flops / t.median / 1e12)
      if args.peak_tflops:
        row["mfu_pct"] = 100 * row["tflops"] / args.peak_tflops
      print(f"  {name}: {row['tflops']:.4g} TFLOP/s"
            + (f", MFU {row['mfu_pct']:.1f}%" if args.peak_tflops else ""))
    if "ratio_jax_over_diffusers" in out:
      print(f"  JAX / torch time ratio {out['ratio_jax_over_diffusers']:.2f}x (< 1: JAX faster)")
  return out


def _fsdp_line(out: dict) -> str:
  f = out.get("fsdp8_memory", {"status": "not asked for"})
  return f"{f['total_bytes'] / 2 ** 30:.2f} GiB" if "total_bytes" in f else f["status"]


def suite_entry(smoke: bool) -> dict:
  """benchmarks/gpu_suite.py: 16x512x512 (both sides, bf16, remat full, 3 steps each), then
  16x576x1024 with JAX alone (the official PyTorch step needs about 70 GB there); each size's
  figures under its name, an error in one kept beside the other. smoke: the tiny size, 1 step."""
  import torch
  runs = [("tiny", [])] if smoke else [("512", []), ("576x1024", ["--no-torch"])]
  out = {}
  for name, extra in runs:
    args = parse_args(["--size", name, "--repeats", "1" if smoke else "3", "--threads", "0",
                       *extra])
    try:
      figures = measure(name, args)
    except Exception as e:   # pylint: disable=broad-except  (an OOM at one size keeps the other)
      figures = {"status": "error", "error": f"{type(e).__name__}: {e}"[:2000]}
    if torch.cuda.is_available():
      torch.cuda.empty_cache()
    for side in ("jax", "torch"):   # the suite's MFU rows: {'tflops': ...} per step kind
      if side in figures:
        out[f"{side} {figures['shape']}"] = figures.pop(side)
    out[name] = figures
  return out


def main(argv=None):
  args = parse_args(argv)
  return harness.emit(measure(args.size, args), args.json)


if __name__ == "__main__":
  main()
