"""Videos/s of the evaluation suite (PSNR, SSIM, L1, LPIPS-alex, FID features): our one jitted
function vs the PyTorch references (the networks of tests/eval/*_reference.py, which are pytorch-fid's
and lpips' structures, plus PSNR/SSIM/L1 in torch), same random weights, CPU, float32.

  python -m benchmarks.evaluate [--tiny] [--frames 16] [--size 256] [--repeats 5] [--json out.json]

--tiny: 4 frames of 32x32 and Inception at 75x75 (checks that the benchmark runs); the default is
the real suite: Inception at 299. One call = one video of --frames frame pairs.
"""
import argparse
import tempfile

import numpy as np


def torch_suite(lpips_ref, inception_ref):
  import torch
  import torch.nn.functional as F
  from sem_repa_jax.eval.metrics import gaussian_window
  w = torch.from_numpy(gaussian_window()).float()
  window = (w[:, None] * w[None, :])[None, None].repeat(3, 1, 1, 1)

  def ssim(x, y, L=255.0):
    c1, c2 = (0.01 * L) ** 2, (0.03 * L) ** 2
    f = lambda t: F.conv2d(t, window, groups=3)
    mx, my = f(x), f(y)
    vx, vy, cov = f(x * x) - mx * mx, f(y * y) - my * my, f(x * y) - mx * my
    m = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    return m.mean((2, 3)).mean(1)

  @torch.no_grad()
  def run(g, r):   # uint8 NHWC numpy
    g = torch.from_numpy(g).permute(0, 3, 1, 2).float()
    r = torch.from_numpy(r).permute(0, 3, 1, 2).float()
    mse = ((g - r) ** 2).mean((1, 2, 3))
    out = dict(psnr=10 * torch.log10(255.0 ** 2 / mse), ssim=ssim(g, r),
               l1=(g - r).abs().mean((1, 2, 3)) / 255.0,
               lpips=lpips_ref(g / 127.5 - 1, r / 127.5 - 1),
               fid=inception_ref(torch.cat([g, r]) / 255.0))
    return {k: v.numpy() for k, v in out.items()}

  return run


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--tiny", action="store_true")
  p.add_argument("--frames", type=int, default=16)
  p.add_argument("--size", type=int, default=256)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--json", default="")
  args = p.parse_args()
  frames, size, inception_size = (4, 32, 75) if args.tiny else (args.frames, args.size, 299)

  import jax
  import torch
  from benchmarks.harness import alternate, table, write_json
  from conversion import fid_inception, lpips as lpips_conversion
  from conversion.mapping import unflatten
  from sem_repa_jax.eval.suite import batch_function
  from sem_repa_jax.models.metrics.inception import FIDInceptionV3
  from sem_repa_jax.models.metrics.lpips import LPIPS
  from tests.eval.inception_reference import FIDInception
  from tests.eval.lpips_reference import TorchLPIPS
  from tests.parity import randomize

  lpips_ref = randomize(TorchLPIPS("alex").eval(), seed=0)
  inception_ref = randomize(FIDInception(inception_size).eval(), seed=1, spread=0.1)
  with tempfile.TemporaryDirectory() as tmp:
    lpips_ref.save_as_users_have(tmp)
    _, lpips_flat = lpips_conversion.convert_arrays(tmp)
  with tempfile.NamedTemporaryFile(suffix=".pth") as f:
    torch.save(inception_ref.state_dict(), f.name)
    fid_flat = fid_inception.convert_arrays(fid_inception.read_arrays(f.name), inception_size)
  names = ("psnr", "ssim", "l1", "lpips", "fid")
  networks = {"lpips": (LPIPS("alex"), unflatten(lpips_flat)),
              "fid": (FIDInceptionV3(inception_size), unflatten(fid_flat))}
  variables = {m: v for m, (_, v) in networks.items()}
  fn = batch_function(names, networks)
  rng = np.random.default_rng(0)
  g = rng.integers(0, 256, (frames, size, size, 3), dtype=np.uint8)
  r = np.clip(g.astype(int) + rng.integers(-30, 30, g.shape), 0, 255).astype(np.uint8)
  ref = torch_suite(lpips_ref, inception_ref)
  ours = jax.device_get(fn(variables, g, r))
  expected = ref(g, r)
  for m in ("psnr", "ssim", "l1", "lpips"):
    np.testing.assert_allclose(ours[m], expected[m], rtol=1e-3, err_msg=m)
  results = alternate({"pytorch": lambda: ref(g, r), "jax": lambda: fn(variables, g, r)},
                      repeats=args.repeats)
  title = (f"evaluation suite, one video of {frames} frames {size}x{size} "
           f"(Inception at {inception_size}): {', '.join(names)}")
  print(table(results, baseline="pytorch", title=title))
  for k, t in results.items():
    print(f"{k}: {1.0 / t.median:.3f} videos/s")
  if args.json:
    write_json(args.json, {"title": title, "results": {k: t.as_dict() for k, t in results.items()},
                           "videos_per_s": {k: 1.0 / t.median for k, t in results.items()}})


if __name__ == "__main__":
  main()
