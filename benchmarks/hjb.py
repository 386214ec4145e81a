"""StableAnimator's HJB face step (diffusion/hjb.py): ours vs the official PyTorch inner loop, on
the same random weights; time and peak memory of one step.

  python -m benchmarks.hjb --tiny        # CPU, seconds
  python -m benchmarks.hjb               # CPU, mid size (a few minutes)
  python -m benchmarks.hjb --xt          # = the GPU suite's entry: 16x512x512 and 16x576x1024
  [--threads N]: CPU threads of torch and XLA (default 1; 0: the libraries' defaults)

One step = `iterations` Adam updates of a copy of x0, each decoding every frame through the
temporal VAE decoder (chunks, graph kept), cropping each frame's face box, resizing it bilinearly
to the face size, embedding it with an IResNet and taking mean |1 - cos| to a reference embedding.
The VAE (diffusers AutoencoderKLTemporalDecoder) and the IResNet (insightface's layout) are built
in torch with random weights and converted by our converters. Variants, timed in turns
(harness.alternate: medians, load average):
  jax         hjb_face_step, no rematerialization
  jax_remat   the same with remat 'full' in the decoder's mid/up blocks and the IResNet's blocks
  torch       the official loop (`torch_hjb_loop`: torch Adam, vae.decode per chunk, F.interpolate)
Memory: JAX: XLA's compiled memory analysis of the jitted step (arguments + output + temporaries
- aliased; nothing runs). Both: the peak resident-memory growth over one call after warm-up,
sampled every 2 ms (harness.peak_rss_growth_mib; torch's CPU tensors are invisible to
tracemalloc). All variants use Adam eps 1e-6 so that the refined x0 of both sides can be compared
element by element (at torch's 1e-8 elements with |g| ~ eps are ill-conditioned: hjb_face_step).
"""
import dataclasses
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import svd_models  # noqa: E402

if __name__ == "__main__":
  THREADS = svd_models.threads_from_argv(sys.argv)   # before jax is imported

import numpy as np  # noqa: E402

from benchmarks import harness  # noqa: E402

SCALING = 0.18215      # SVD's VAE scaling factor
ADAM_EPS = 1e-6
LEARNING_RATE = 0.1    # the official lr at step 0
WINDOW_MARGINS = (2, 4, 8)   # latents around the face box (hjb_window), measured
WINDOW_MARGIN = 4            # the jax_window variant's


@dataclasses.dataclass(frozen=True)
class HJBSize:
  vae: dict            # diffusers AutoencoderKLTemporalDecoder arguments
  layers: tuple        # IResNet blocks per stage
  widths: tuple        # IResNet stage widths
  features: int
  face_size: int
  frames: int
  height: int
  width: int
  chunk: int           # decode_chunk_size (the official loop: 4)
  iterations: int = 3


SIZES = {
    "tiny": HJBSize(svd_models.SIZES["tiny"].vae, (1, 1, 1, 1), (8, 16, 16, 32), 16, 32,
                    frames=3, height=32, width=32, chunk=2, iterations=2),
    # Compression 8 as the real VAE (latents 32x32 at 256x256), a quarter of its widths.
    "mid": HJBSize(dict(block_out_channels=(32, 64, 64, 64),
                        down_block_types=("DownEncoderBlock2D",) * 4, layers_per_block=1,
                        latent_channels=4),
                   (2, 2, 2, 2), (32, 64, 128, 256), 512, 112,
                   frames=8, height=256, width=256, chunk=4),
}
# The GPU suite: the SVD VAE and iresnet100 at the official frame sizes, random weights, JAX only.
GPU_SHAPES = ((16, 512, 512), (16, 576, 1024))


def face_boxes(frames: int, height: int, width: int, seed: int = 0) -> np.ndarray:
  """(frames, 4) int32 [y_min, y_max, x_min, x_max] (inclusive): a face of a fifth to a quarter of
  the shorter side (a full-body dance video's), starting at a random place and moving by up to a
  48th of that side per frame in each direction."""
  rng = np.random.default_rng(seed)
  side = min(height, width)
  h, w = rng.integers(side // 5, side // 4 + 1, 2)
  y, x = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
  boxes = []
  for _ in range(frames):
    boxes.append((y, y + h - 1, x, x + w - 1))
    dy, dx = rng.integers(-(side // 48), side // 48 + 1, 2)
    y, x = int(np.clip(y + dy, 0, height - h)), int(np.clip(x + dx, 0, width - w))
  return np.asarray(boxes, np.int32)


def torch_hjb_loop(vae, arcface, x0, boxes, e_ref, *, lr, iterations, chunk, face_size,
                   eps=1e-8, scaling=SCALING):
  """The official inner loop (StableAnimator animation/pipelines/euler_discrete_pro.py), one video:
  x0 (F, h, w, C) numpy scaled latents, boxes (F, 4) inclusive -> (refined x0, losses)."""
  import torch
  import torch.nn.functional as F
  frames_n = x0.shape[0]
  z0 = torch.from_numpy(x0).permute(0, 3, 1, 2)[None].clone().requires_grad_(True)
  opt = torch.optim.Adam([z0], lr=lr, eps=eps)
  ref = torch.from_numpy(np.asarray(e_ref))[None].repeat(frames_n, 1)
  losses = []
  for _ in range(iterations):
    latents = z0.flatten(0, 1) / scaling
    chunks = [latents[i:i + chunk] for i in range(0, frames_n, chunk)]
    frames = torch.cat([vae.decode(z, num_frames=len(z)).sample for z in chunks])
    frames = ((frames / 2 + 0.5).clamp(0, 1) * 255).clamp(0, 255).div(255).sub(0.5).div(0.5)
    faces = torch.cat([F.interpolate(frames[k:k + 1, :, y0:y1 + 1, x0_:x1 + 1],
                                     size=(face_size, face_size), mode="bilinear",
                                     align_corners=False)
                       for k, (y0, y1, x0_, x1) in enumerate(boxes)])
    loss = (1 - torch.nn.CosineSimilarity(dim=1)(arcface(faces), ref)).abs().mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    losses.append(float(loss.detach()))
  return z0.detach()[0].permute(0, 2, 3, 1).numpy(), np.array(losses)


def compression(vae_module) -> int:
  return 2 ** (len(vae_module.config.block_out_channels) - 1)


def vae_decode(vae_module, vae_vars, chunk):
  """decode(z (F, h, w, C) scaled latents) -> frames (F, H, W, 3), by chunks."""
  return lambda z: vae_module.apply(vae_vars, z[None] / SCALING, chunk, method="decode")[0]


def jax_step(vae_module, face_module, *, chunk, iterations, face_size, eps=ADAM_EPS,
             window=None):
  """jitted (vae_vars, face_vars, x0, boxes, has_face, e_ref, lr) -> (refined x0, losses): the
  weights are arguments, so the compiled memory counts them and nothing is baked in. window:
  (rows, cols) latents: decode only a window of that size around each face (hjb_window)."""
  import jax
  from sem_repa_jax.diffusion import hjb, hjb_window
  s = compression(vae_module)

  def step(vae_vars, face_vars, x0, boxes, has_face, e_ref, lr):
    decode = vae_decode(vae_module, vae_vars, chunk)
    embed = lambda faces: face_module.apply(face_vars, faces)
    if window is not None:
      origins, boxes = hjb_window.face_windows(boxes, has_face, x0.shape[1:3], s, window)
      decode = hjb_window.window_decode(decode, origins, window)
    return hjb.hjb_face_step(x0, lr, decode=decode, embed=embed, boxes=boxes, has_face=has_face,
                             reference_embedding=e_ref, iterations=iterations,
                             face_size=face_size, adam_eps=eps)
  return jax.jit(step)


def compiled_figures(fn, *args):
  """(fn compiled for args, XLA's memory analysis of it (per device) with the total live bytes and
  the compile seconds). Calling the compiled program, not fn, avoids a second compile."""
  from sem_repa_jax.training.loop import memory_figures
  t = time.perf_counter()
  compiled = fn.lower(*args).compile()
  m = memory_figures(compiled)
  m["compile_s"] = time.perf_counter() - t
  if m:
    m["total_bytes"] = (m["argument_bytes"] + m["output_bytes"] + m["temp_bytes"]
                        - m.get("alias_bytes", 0))
  return compiled, m


def build_torch(size: HJBSize):
  """(vae, arcface) in torch, eval mode, random weights (BN statistics too)."""
  import torch
  from diffusers import AutoencoderKLTemporalDecoder
  from benchmarks.arcface import torch_iresnet
  torch.manual_seed(0)
  vae = AutoencoderKLTemporalDecoder(**size.vae).eval()
  arcface = torch_iresnet(size.layers, size.widths, size.features, size.face_size)
  return vae, arcface


def convert_iresnet(arcface):
  """Our IResNet with the torch model's weights, through conversion/arcface.py (.pth)."""
  import torch
  from conversion import arcface as conv_arcface
  from sem_repa_jax.models import load_pretrained
  with tempfile.TemporaryDirectory() as tmp:
    torch.save(arcface.state_dict(), os.path.join(tmp, "backbone.pth"))
    return load_pretrained(conv_arcface.convert(os.path.join(tmp, "backbone.pth"),
                                                os.path.join(tmp, "arcface")))


def _mib(n) -> str:
  return f"{n / 2 ** 20:.1f} MiB"


def window_errors(vae_module, vae_vars, x0, boxes, has_face, chunk, windows) -> dict:
  """{margin: max |window decode - full decode| inside the face boxes} (forward decodes)."""
  import jax
  from sem_repa_jax.diffusion import hjb_window
  s, decode = compression(vae_module), vae_decode(vae_module, vae_vars, chunk)
  full = jax.jit(decode)(x0)
  out = {}
  for margin, window in windows.items():
    origins, local = hjb_window.face_windows(boxes, has_face, x0.shape[1:3], s, window)
    frames = jax.jit(hjb_window.window_decode(decode, origins, window))(x0)
    out[margin] = hjb_window.max_error_inside_boxes(frames, local, full, boxes)
  return out


def run(size_name: str, repeats: int = 3, threads: int = 1, margins=WINDOW_MARGINS) -> dict:
  """margins: of the face windows measured (hjb_window); the jax_window variant runs when
  WINDOW_MARGIN is one of them."""
  import jax
  import jax.numpy as jnp
  import torch
  from sem_repa_jax.diffusion import hjb_window
  svd_models.set_torch_threads(threads)
  size = SIZES[size_name]
  vae, arcface = build_torch(size)
  vae_module, vae_vars = svd_models.convert("vae", vae)
  face_module, face_vars = convert_iresnet(arcface)
  s = compression(vae_module)
  rng = np.random.default_rng(0)
  x0 = (0.5 * rng.standard_normal((size.frames, size.height // s, size.width // s,
                                   size.vae["latent_channels"]))).astype(np.float32)
  boxes = face_boxes(size.frames, size.height, size.width)
  has_face = np.ones(size.frames, bool)
  face = rng.uniform(-1, 1, (1, 3, size.face_size, size.face_size)).astype(np.float32)
  with torch.no_grad():
    e_ref = arcface(torch.from_numpy(face))[0].numpy()
  kw = dict(chunk=size.chunk, iterations=size.iterations, face_size=size.face_size)
  steps = {"jax": (jax_step(vae_module, face_module, **kw), vae_vars, face_vars),
           "jax_remat": (jax_step(vae_module.clone(remat_policy="full"),
                                  face_module.clone(remat="full"), **kw), vae_vars, face_vars)}
  windows = {m: hjb_window.window_size(boxes, has_face, x0.shape[1:3], s, m) for m in margins}
  if WINDOW_MARGIN in windows:
    steps["jax_window"] = (jax_step(vae_module, face_module, window=windows[WINDOW_MARGIN], **kw),
                           vae_vars, face_vars)
  args = (jnp.asarray(x0), jnp.asarray(boxes), jnp.asarray(has_face), jnp.asarray(e_ref),
          jnp.float32(LEARNING_RATE))
  figures = dict(benchmark="hjb", size=size_name, latent_shape=list(x0.shape),
                 frame_size=[size.height, size.width], decode_chunk_size=size.chunk,
                 iterations=size.iterations, face_size=size.face_size, adam_eps=ADAM_EPS,
                 boxes=boxes.tolist(), compiled_memory={}, peak_rss_growth_mib={})
  fns = {}
  for name, (fn, v, f) in steps.items():
    compiled, m = compiled_figures(fn, v, f, *args)
    figures["compiled_memory"][name] = m
    fns[name] = (lambda fn=compiled, v=v, f=f: fn(v, f, *args))
    print(f"  {name}: compiled total {_mib(m['total_bytes'])} (temp {_mib(m['temp_bytes'])}, "
          f"arguments {_mib(m['argument_bytes'])}), compile {m['compile_s']:.1f} s", flush=True)
  fns["torch"] = lambda: torch_hjb_loop(vae, arcface, x0, boxes, e_ref, lr=LEARNING_RATE,
                                        eps=ADAM_EPS, **kw)
  want_z, want_losses = fns["torch"]()
  for name in steps:
    z, losses = jax.block_until_ready(fns[name]())
    figures[f"max_abs_z_error_{name}"] = float(np.abs(np.asarray(z) - want_z).max())
    figures[f"max_abs_loss_error_{name}"] = float(np.abs(np.asarray(losses) - want_losses).max())
  figures["windows"] = {m: dict(window=list(w), area=w[0] * w[1] / (x0.shape[1] * x0.shape[2]))
                        for m, w in windows.items()}
  for m, err in window_errors(vae_module, vae_vars, jnp.asarray(x0), boxes, has_face, size.chunk,
                              windows).items():
    figures["windows"][m]["max_abs_error_inside_boxes"] = err
  figures["z_moved"] = float(np.abs(want_z - x0).max())
  figures["losses_torch"] = want_losses.tolist()
  res = harness.alternate(fns, repeats=repeats)
  for name, fn in fns.items():   # after the timing: one more call each, sampled
    figures["peak_rss_growth_mib"][name] = harness.peak_rss_growth_mib(
        lambda fn=fn: jax.block_until_ready(fn()))
  print(harness.table(res, baseline="torch",
                      title=f"HJB face step, size {size_name}: latents {tuple(x0.shape)} -> "
                            f"{size.frames}x{size.height}x{size.width}, chunk {size.chunk}, "
                            f"{size.iterations} iterations, faces {size.face_size}, "
                            f"{jax.default_backend()}"))
  for name in steps:
    print(f"  {name}: max |z - z_torch| {figures[f'max_abs_z_error_{name}']:.2e}")
  for m, w in figures["windows"].items():
    print(f"  window at margin {m}: {w['window']} latents ({w['area']:.0%} of the frame), max "
          f"|window - full decode| inside the boxes {w['max_abs_error_inside_boxes']:.2e}")
  print("  peak RSS growth over one step: " + ", ".join(
      f"{k} {v:.0f} MiB" for k, v in figures["peak_rss_growth_mib"].items()))
  figures["timings"] = svd_models.timing_figures(res, baseline="")
  for name in steps:
    figures["timings"][f"ratio_{name}_over_torch"] = res[name].median / res["torch"].median
  return figures


def _batch_stats_ones(variables):
  """random_init draws BatchNorm variances from N(0, 0.02); a negative one makes NaNs."""
  import jax
  import jax.numpy as jnp
  return jax.tree_util.tree_map_with_path(
      lambda p, x: jnp.ones_like(x) if str(getattr(p[-1], "key", "")) == "var" else x, variables)


def gpu_entry(shapes=GPU_SHAPES, vae_preset: str = "svd", depth: int = 100, chunk: int = 4,
              repeats: int = 2, remat: str = "full") -> dict:
  """JAX only, float32 as the official code: time and compiled memory (per device) of one HJB
  step (3 iterations) at each (frames, height, width), the SVD VAE preset and iresnet`depth` with
  random weights, remat `remat` in the decoder and the IResNet. The face boxes are as in the
  CPU benchmark (a fifth to a third of the shorter side)."""
  import jax
  import jax.numpy as jnp
  from benchmarks.random_init import random_variables
  from sem_repa_jax.models.encoders.arcface import IResNet, IResNetConfig
  from sem_repa_jax.models.svd.vae import build as build_vae
  vae_module = build_vae(vae_preset, attention=svd_models.default_attention(),
                         remat_policy=remat)
  face_module = IResNet(IResNetConfig.from_depth(depth), remat=remat)
  vae_vars = random_variables(vae_module, jnp.zeros((1, 1, 64, 64, 3)))
  face_vars = _batch_stats_ones(random_variables(face_module, jnp.zeros((1, 112, 112, 3))))
  step = jax_step(vae_module, face_module, chunk=chunk, iterations=3, face_size=112)
  s = compression(vae_module)
  out = dict(vae=vae_preset, iresnet_depth=depth, decode_chunk_size=chunk, remat=remat,
             dtype="float32", device=str(jax.devices()[0].device_kind))
  for frames, height, width in shapes:
    x0 = 0.5 * jax.random.normal(jax.random.key(0), (frames, height // s, width // s,
                                                     vae_module.config.latent_channels))
    boxes = face_boxes(frames, height, width)
    args = (vae_vars, face_vars, x0, jnp.asarray(boxes), jnp.ones(frames, bool),
            jax.random.normal(jax.random.key(1), (512,)), jnp.float32(LEARNING_RATE))
    compiled, row = compiled_figures(step, *args)
    row["compiled_gib"] = row.get("total_bytes", 0) / 2 ** 30
    t = harness.alternate({"jax": lambda: compiled(*args)}, repeats=repeats)["jax"]
    row["timing"] = t
    z, losses = compiled(*args)
    row["losses_finite"] = bool(np.isfinite(np.asarray(losses)).all())
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:   # the process's peak so far (never goes down)
      row["device_peak_gib"] = stats["peak_bytes_in_use"] / 2 ** 30
    out[f"{frames}x{height}x{width}"] = row
    print(f"HJB step {frames}x{height}x{width}: {t.median:.2f} s, compiled "
          f"{row['compiled_gib']:.2f} GiB per device (temp {_mib(row['temp_bytes'])})")
  out["peak_gib"] = max(r["compiled_gib"] for k, r in out.items() if isinstance(r, dict))
  return out


def suite_entry(smoke: bool) -> dict:
  """smoke: the tiny config against torch on CPU (without the face-window variant: a compile
  less, tests/diffusion/test_hjb_window.py covers it); else the official sizes on the GPU (JAX)."""
  return run("tiny", repeats=2, margins=()) if smoke else gpu_entry()


def main():
  svd_models.command_line(__doc__, run, suite_entry)


if __name__ == "__main__":
  main()
