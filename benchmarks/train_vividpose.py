"""VividPose training step vs the SVD U-Net training step plus one ReferenceNet forward at the same
shapes, JAX vs JAX (issue 20: within 1.4x).

  python -m benchmarks.train_vividpose --size tiny     # CPU, seconds
  python -m benchmarks.train_vividpose                 # CPU, mid size (8 x 128 x 192)
  python -m benchmarks.train_vividpose --size paper    # GPU: 14 x 768 x 512, bf16, remat full
  [--threads N]: XLA's CPU threads (default 1; 0: the library's default)

vividpose: the step of jobs/train_vividpose.py as `fit` builds it (build_networks, make_loss_fn,
init_args, the paper's end-to-end trainable set, make_train_state, loop.compile_train_step): the
ReferenceNet forward and backward, both controllers, the U-Net with reference attention and the
ID branch, AdamW over all four networks. svd: the same objective and optimizer on the plain SVD
U-Net of the same size (no reference, no ID group, no pose maps, the U-Net trained in full).
reference_net: one jitted ReferenceNet forward (reference_net_features) on the same reference.
The three alternate (benchmarks/harness.py); ratio = vividpose / (svd + reference_net), each a
median. Weights are fresh initializations (zeros where that is cheaper to build; timing only).
"""
import argparse
import dataclasses
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import svd_models  # noqa: E402

if __name__ == "__main__":
  THREADS = svd_models.threads_from_argv(sys.argv)   # before jax is imported

import numpy as np  # noqa: E402

from benchmarks import harness  # noqa: E402

TARGET = 1.4


@dataclasses.dataclass(frozen=True)
class Size:
  config: str          # configs/<config>.py
  preset: str          # 'tiny', 'mid' (here) or a methods/vividpose PRESETS name
  frames: int
  latent_hw: tuple     # latent (h, w); maps are 8x that
  batch: int


SIZES = {
    "tiny": Size("vividpose_tiny", "tiny", 3, (8, 6), 1),
    "mid": Size("vividpose_tiny", "mid", 8, (16, 24), 1),
    "paper": Size("vividpose", "vividpose", 14, (96, 64), 1),   # 768 x 512 portrait
}


def mid_preset():
  """A CPU-sized VividPose: three-level SVD / SD U-Nets 64/128/128 wide, context 64."""
  from sem_repa_jax.methods.vividpose.id_controller import IDControllerConfig
  from sem_repa_jax.methods.vividpose.model import VividPoseConfig, vividpose_unet
  from sem_repa_jax.models.sd.unet_config import UNet2DConditionConfig
  from sem_repa_jax.models.svd.unet import UNetSpatioTemporalConfig
  widths, heads = (64, 128, 128), (2, 4, 4)
  svd = UNetSpatioTemporalConfig(
      block_out_channels=widths,
      down_block_types=("CrossAttnDownBlockSpatioTemporal",) * 2 + ("DownBlockSpatioTemporal",),
      up_block_types=("UpBlockSpatioTemporal",) + ("CrossAttnUpBlockSpatioTemporal",) * 2,
      layers_per_block=1, num_attention_heads=heads, cross_attention_dim=64,
      addition_time_embed_dim=8, projection_class_embeddings_input_dim=24, num_frames=8)
  sd = UNet2DConditionConfig(
      block_out_channels=widths, down_block_types=("CrossAttnDownBlock2D",) * 2 + ("DownBlock2D",),
      up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 2, layers_per_block=1,
      attention_head_dim=heads, cross_attention_dim=64)
  return VividPoseConfig(vividpose_unet(svd), sd,
                         id_controller=IDControllerConfig(id_embeddings_dim=64, hidden_dim=128,
                                                          cross_attention_dim=64),
                         num_frames=8, height=128, width=192)


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--size", choices=sorted(SIZES), default="mid")
  p.add_argument("--repeats", type=int, default=3, help="timed steps per side (after a warm-up)")
  p.add_argument("--threads", type=int, default=1)
  p.add_argument("--json", default="", help="also write the figures here")
  return p.parse_args(argv)


def job_config(size: Size):
  import importlib
  c = importlib.import_module(f"configs.{size.config}").get_config()
  c.data.batch_size = size.batch
  c.mesh.shape = (1, 1, 1)
  return c


def synthetic_batch(cfg, size: Size, seed: int = 0) -> dict:
  """Records' fields (objective.BATCH_FIELDS) at this size, random."""
  r = np.random.default_rng(seed)
  (h, w), f, b = size.latent_hw, size.frames, size.batch
  f32 = lambda *s: r.standard_normal(s).astype(np.float32)
  maps = lambda: r.integers(0, 256, (b, f, 8 * h, 8 * w, 3), np.uint8)
  return {"video_latents": f32(b, f, h, w, 4), "reference_latents": 0.2 * f32(b, h, w, 4),
          "clip_embeds": f32(b, cfg.unet.cross_attention_dim[0]),
          "id_embeds": f32(b, cfg.id_controller.id_embeddings_dim), "pose_images": maps(),
          "dense_maps": maps()}


def _compiled_step(c, model_init, init_args, loss_fn, mesh, rules):
  """(init, compiled TrainStep) of `fit`'s making for a model, everything trained."""
  import jax
  import jax.numpy as jnp
  from sem_repa_jax.training import loop, optimizers
  from sem_repa_jax.training.train_state import make_train_state
  tx, schedule = optimizers.make_optimizer(c.optimizer)

  def zeros_init(key, *args):   # the boxes (logical axes) of init, zeros inside: no init compile
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(model_init, key,
                                                                                *args))
  abstract, init = make_train_state(zeros_init, jax.random.key(0), *init_args, tx=tx, mesh=mesh,
                                    rules=rules, rng=1)
  return init, loop.compile_train_step(loop.make_train_step(loss_fn, schedule), abstract, mesh,
                                       rules)


def measure(size_name: str, args) -> dict:
  import jax
  import jax.numpy as jnp
  from sem_repa_jax.jobs import train_animator, train_vividpose
  from sem_repa_jax.methods.stableanimator.objective import (draw, noisy_inputs,
                                                            weighted_denoising_loss)
  from sem_repa_jax.methods.vividpose import model as vp_model
  from sem_repa_jax.methods.vividpose.reference import reference_net_features
  from sem_repa_jax.models.svd.unet import UNetSpatioTemporal
  from sem_repa_jax.training import mesh as mesh_lib, sharding
  size = SIZES[size_name]
  c = job_config(size)
  preset = mid_preset() if size.preset == "mid" else vp_model.PRESETS[size.preset]
  cfg = train_animator.objective_config(c)
  batch = synthetic_batch(preset, size)
  kw = dict(dtype=jnp.dtype(c.dtype), param_dtype=jnp.dtype(c.param_dtype),
            attention=c.attention, remat_policy=c.remat_policy)
  nets = train_vividpose.VividPoseNetworks(*vp_model.build_models(preset, **kw))
  example = {k: np.zeros((1,) + v.shape[1:], v.dtype) for k, v in batch.items()}
  mesh = mesh_lib.make_mesh(c, devices=jax.devices()[:1])
  rules = sharding.axis_rules(c)
  out = {"benchmark": "train_vividpose", "size": size_name,
         "shape": f"{size.batch}x{size.frames}x{8 * size.latent_hw[0]}x{8 * size.latent_hw[1]}",
         "dtype": c.dtype, "remat": c.remat_policy, "attention": c.attention,
         "device": str(jax.devices()[0].device_kind)}
  t0 = time.perf_counter()
  vp_init, vp_step = _compiled_step(c, nets.init, train_vividpose.init_args(nets, example),
                                    train_vividpose.make_loss_fn(nets, cfg), mesh, rules)
  # The plain SVD U-Net of the same size, trained in full with the same objective.
  base = dataclasses.replace(preset.unet, extra_context_tokens=0, id_in_temporal=False,
                             id_zero_init=False)
  unet = UNetSpatioTemporal(base, **kw)

  def svd_loss(variables, b, rng):
    d = draw(rng, b["video_latents"], cfg)
    n = noisy_inputs(b, d, cfg)
    context = jnp.where(n.keep_clip[:, None, None], b["clip_embeds"][:, None], 0.0)
    out = unet.apply(variables, n.sample, n.pre.timestep, context, n.added_time_ids)
    return weighted_denoising_loss(n, out, d.sigma, None, 0.0)
  x0 = example["video_latents"]
  svd_args = (jnp.zeros(x0.shape[:-1] + (base.in_channels,)), jnp.zeros((1,)),
              jnp.zeros((1, 1, base.cross_attention_dim[0])),
              jnp.zeros((1, base.num_added_time_ids)))
  svd_init, svd_step = _compiled_step(c, unet.init, svd_args, svd_loss, mesh, rules)
  ref_vars = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(
      nets.reference_net.init, jax.random.key(0), jnp.zeros((1,) + batch["reference_latents"]
                                                             .shape[1:]), jnp.zeros((1,)),
      jnp.zeros((1, 1, base.cross_attention_dim[0]))))
  ref_fwd = jax.jit(lambda v, r, ctx: reference_net_features(nets.reference_net, v, r, ctx))
  sharded = sharding.shard_batch(batch, mesh, rules)
  holders = {"vividpose": vp_init(), "svd": svd_init()}
  steps = {"vividpose": vp_step, "svd": svd_step}
  feed = {"vividpose": sharded, "svd": {k: sharded[k] for k in ("video_latents",
                                                                 "reference_latents",
                                                                 "clip_embeds")}}
  for k in steps:   # compile (the first call) outside the clock
    holders[k], _ = steps[k](holders[k], feed[k])
  ref_args = (ref_vars, jnp.asarray(batch["reference_latents"]), jnp.asarray(batch["clip_embeds"]))
  jax.block_until_ready(ref_fwd(*ref_args))
  out["compile_s"] = time.perf_counter() - t0

  def runner(k):
    def run():
      holders[k], metrics = steps[k](holders[k], feed[k])   # the state is donated
      return metrics["loss"]
    return run
  fns = {"vividpose": runner("vividpose"), "svd": runner("svd"),
         "reference_net": lambda: ref_fwd(*ref_args)}
  res = harness.alternate(fns, repeats=args.repeats, warmup=1)
  out.update({k: t.as_dict() for k, t in res.items()})
  baseline = res["svd"].median + res["reference_net"].median
  out["ratio_vividpose_over_svd_plus_reference"] = res["vividpose"].median / baseline
  out["target"] = TARGET
  out["machine"] = harness.machine()
  out["loaded"] = harness.loaded()
  print(f"VividPose training step, size {size_name} ({out['shape']}), {c.dtype}, remat "
        f"{c.remat_policy}, {out['device']}; compile {out['compile_s']:.1f} s")
  print(harness.table(res, title="seconds per call (medians)"))
  ratio = out["ratio_vividpose_over_svd_plus_reference"]
  print(f"  vividpose / (svd + reference_net) = {ratio:.2f} (target <= {TARGET}); load average {out['machine']['load_average']}"
        f"{' LOADED' if out['loaded'] else ''}")
  return out


def suite_entry(smoke: bool) -> dict:
  """benchmarks/gpu_suite.py: the paper's 14 x 768 x 512 (bf16, remat full, 3 steps each); smoke:
  the tiny size, 1 step."""
  name = "tiny" if smoke else "paper"
  return measure(name, parse_args(["--size", name, "--repeats", "1" if smoke else "3",
                                   "--threads", "0"]))


def main(argv=None):
  args = parse_args(argv)
  return harness.emit(measure(args.size, args), args.json)


if __name__ == "__main__":
  main()
