"""Job evaluate: generated videos against reference videos -> a metrics table (JSON + markdown).

Both sides are a folder or a .jsonl manifest. A folder's videos are its video files (.mp4, .mov,
.avi, .webm, .mkv) and its sub-folders of PNG/JPEG frames; a manifest holds one object per line
with `path` (relative to the manifest) and optionally `name`. Videos pair up by name (the file
stem, or the manifest's `name`); a pair must agree in frame count and size. The metrics of
config.evaluate.metrics (eval/suite.py) run in batches of frames, one jitted function over the
local devices; PSNR, SSIM, L1 and LPIPS are averaged per video and then over videos, FID is one
Frechet distance between the Inception features of all generated and all reference frames.
FVD and FID-VID cut each video into clips of config.evaluate.clip_length frames (16) every
clip_stride frames (16: non-overlapping, from frame 0, a shorter tail left out; a video shorter
than one clip is an error) and take one Frechet distance over the I3D features of all clips
(eval/fvd.py). The motion score is an FID between the colorized RAFT flows of consecutive
frames of all generated and all reference videos (eval/motion.py), config.evaluate.flow_batch_size
frame pairs a step. CPBD scores each generated frame alone (eval/cpbd.py), averaged like PSNR.
CSIM and the ID score (eval/identity.py) detect each frame's face with the SCRFD file
config.evaluate.face_detector, crop it (config.evaluate.face_crop) and embed it with the ArcFace
folder config.evaluate.arcface_weights: CSIM is the cosine between generated frame i and
reference frame i, the ID score between generated frame i and the reference image (the image
<name>.png/.jpg in config.evaluate.id_reference, else the reference video's first frame). Frames
without a face (on either side for CSIM) are left out and counted (per video `<metric>_frames`,
in the summary the total), never scored as zero; a reference image without a face is an error.
Both are averaged per video, then over the videos with a scored frame. The text score
(eval/text_score.py) is the raw CLIP cosine of each generated frame with its video's prompt
(config.evaluate.prompts: a .jsonl of {"name" or "path", "prompt"}; "" reads the `prompt` of a
.jsonl config.evaluate.generated), CLIP from config.evaluate.clip_weights and its tokenizer from
config.evaluate.clip_tokenizer (default: the CLIP folder), averaged per video then over videos.
Writes <workdir>/metrics.json and <workdir>/evaluation.md.
"""
import json
import os

import numpy as np
from absl import logging

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".webm", ".mkv")
__all__ = ["run", "list_videos", "pair_videos", "read_video", "markdown_table"]


def _jsonl_records(spec: str):
  """(line number, parsed object) of each non-empty line of a .jsonl file."""
  with open(spec, encoding="utf-8") as f:
    for lineno, line in enumerate(f, 1):
      if line.strip():
        try:
          yield lineno, json.loads(line)
        except json.JSONDecodeError as e:
          raise ValueError(f"{spec}:{lineno}: not valid JSON ({e.msg})") from None


def _stem(path: str) -> str:
  return os.path.splitext(os.path.basename(path.rstrip("/")))[0]


def list_videos(spec: str, field: str) -> dict:
  """{name: path} of a folder or .jsonl manifest (see the module docstring)."""
  from sem_repa_jax.eval.video_io import frame_files
  if not spec:
    raise ValueError(f"{field} is empty; set it to a folder of videos or a .jsonl manifest")
  out = {}
  if os.path.isfile(spec) and spec.endswith(".jsonl"):
    base = os.path.dirname(os.path.abspath(spec))
    for lineno, record in _jsonl_records(spec):
      if not isinstance(record, dict) or not isinstance(record.get("path"), str):
        raise ValueError(f"{spec}:{lineno}: expected an object with a string 'path'")
      path = os.path.join(base, record["path"])
      name = str(record.get("name") or _stem(path))
      if name in out:
        raise ValueError(f"{spec}:{lineno}: name {name!r} appears twice")
      out[name] = path
  elif os.path.isdir(spec):
    for entry in sorted(os.listdir(spec)):
      path = os.path.join(spec, entry)
      stem, suffix = os.path.splitext(entry)
      if os.path.isfile(path) and suffix.lower() in VIDEO_SUFFIXES:
        name = stem
      elif os.path.isdir(path) and frame_files(path):
        name = entry
      else:
        continue
      if name in out:
        raise ValueError(f"{field}: {spec} holds two videos named {name!r} ({out[name]}, {path})")
      out[name] = path
  else:
    raise ValueError(f"{field} = {spec!r}: not a folder or a .jsonl manifest")
  if not out:
    raise ValueError(f"{field} = {spec!r}: no videos ({'/'.join(VIDEO_SUFFIXES)} files or "
                     "folders of PNG frames)")
  return out


def pair_videos(generated: dict, reference: dict) -> list:
  """[(name, generated path, reference path)] sorted by name; unmatched names are an error."""
  only_g = sorted(set(generated) - set(reference))
  only_r = sorted(set(reference) - set(generated))
  if only_g or only_r:
    show = lambda names: ", ".join(names[:5]) + (f" (+{len(names) - 5} more)" if len(names) > 5 else "")
    raise ValueError("config.evaluate: videos do not pair up by name: "
                     + "; ".join(p for p in (only_g and f"no reference for {show(only_g)}",
                                             only_r and f"no generated video for {show(only_r)}") if p))
  return [(n, generated[n], reference[n]) for n in sorted(generated)]


def read_video(path: str) -> np.ndarray:
  """uint8 (F, H, W, 3) of a video file or a frame folder; one-line errors naming the path."""
  from sem_repa_jax.eval.video_io import read_frame_folder
  if os.path.isdir(path):
    return read_frame_folder(path)
  from data_pipelines.video import read_frames
  try:
    return read_frames(path)
  except ValueError:   # VideoError: already one line naming the file
    raise
  except Exception as e:  # decoders raise their own types for corrupt files
    raise ValueError(f"{path}: cannot decode as a video ({type(e).__name__}: {e})") from None


def markdown_table(summary: dict, metrics) -> str:
  """The summary's row; a metric no frame could score (None) shows as 'n/a'."""
  from sem_repa_jax.eval.suite import LOWER_IS_BETTER
  head = "| " + " | ".join(f"{m.upper().replace('_', '-')} {'↓' if LOWER_IS_BETTER[m] else '↑'}"
                           for m in metrics)
  row = "| " + " | ".join("n/a" if summary[m] is None else f"{summary[m]:.4g}" for m in metrics)
  return (f"## Evaluation ({summary['videos']} videos, {summary['frames']} frames)\n\n"
          f"{head} |\n|{'---|' * len(metrics)}\n{row} |\n")


def _load_networks(e, names, sharding) -> dict:
  from sem_repa_jax.eval.suite import NETWORK_KIND, WEIGHTS_FIELD, networks_needed
  from sem_repa_jax.models.pretrained import load_pretrained, read_pretrained_config
  networks, loaded = {}, {}
  for network, metric in networks_needed(names):
    field, want = WEIGHTS_FIELD[network], NETWORK_KIND[network]
    path = e[field]
    if not path:
      raise ValueError(f"config.evaluate.{field} is empty; metric {metric!r} needs a folder from "
                       f"`python -m conversion {want}`")
    kind = read_pretrained_config(path)["kind"]
    if kind != want:
      raise ValueError(f"config.evaluate.{field} = {path}: a {kind!r} folder; expected {want!r}")
    if path not in loaded:   # FVD and FID-VID share one I3D folder
      loaded[path] = load_pretrained(path, sharding=sharding)
    networks[network] = loaded[path]
  return networks


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def read_prompts(spec: str, field: str) -> dict:
  """{name: prompt} of a .jsonl whose lines hold `prompt` and `name` or `path` (the name is then
  the path's stem, as in list_videos); lines without a prompt are skipped."""
  if not (os.path.isfile(spec) and spec.endswith(".jsonl")):
    raise ValueError(f"{field} = {spec!r}: not a .jsonl file of {{\"name\", \"prompt\"}} lines")
  out = {}
  for lineno, record in _jsonl_records(spec):
    if not isinstance(record, dict) or "prompt" not in record:
      continue
    name = record.get("name") or (isinstance(record.get("path"), str) and _stem(record["path"]))
    if not name or not isinstance(record["prompt"], str):
      raise ValueError(f"{spec}:{lineno}: expected a string 'prompt' and a 'name' or 'path'")
    out[str(name)] = record["prompt"]
  return out


def _prompt_ids(e, names, clip_module):
  """{video name: (input_ids (1, L), attention_mask (1, L))} of every video's prompt."""
  from sem_repa_jax.models.encoders.tokenize import load_clip_tokenizer, tokenize_clip
  field = "config.evaluate.prompts"
  spec = e.prompts
  if not spec:
    if not e.generated.endswith(".jsonl"):
      raise ValueError(f"{field} is empty and config.evaluate.generated is a folder: text_score "
                       "needs a .jsonl of {\"name\", \"prompt\"} lines")
    spec, field = e.generated, "config.evaluate.generated"
  prompts = read_prompts(spec, field)
  missing = [n for n in names if n not in prompts]
  if missing:
    raise ValueError(f"{field} = {spec}: no prompt for {', '.join(missing[:5])}"
                     + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else ""))
  tokenizer = load_clip_tokenizer(e.clip_tokenizer or e.clip_weights)
  ids, mask, truncated = tokenize_clip(tokenizer, [prompts[n] for n in names],
                                       clip_module.config.text.max_position_embeddings)
  long = [n for n, t in zip(names, truncated) if t]
  if long:
    logging.warning("evaluate: the prompts of %d videos (%s) are longer than CLIP's %d tokens and "
                    "were truncated", len(long), ", ".join(long[:3]), ids.shape[1])
  return {n: (ids[i:i + 1], mask[i:i + 1]) for i, n in enumerate(names)}


def reference_image(folder: str, name: str) -> np.ndarray:
  """uint8 RGB (H, W, 3) of <folder>/<name>.png (or .jpg/.jpeg): the ID score's reference."""
  from PIL import Image
  for suffix in IMAGE_SUFFIXES:
    path = os.path.join(folder, name + suffix)
    if os.path.isfile(path):
      try:
        with Image.open(path) as im:
          return np.asarray(im.convert("RGB"))
      except Exception as e:  # PIL raises its own types for corrupt files
        raise ValueError(f"{path}: cannot read as an image ({type(e).__name__}: {e})") from None
  raise ValueError(f"config.evaluate.id_reference = {folder}: no {name}.png/.jpg/.jpeg for video "
                   f"{name!r}")


def _face_detector(e):
  from sem_repa_jax.models.encoders.face_detect import SCRFD
  if not e.face_detector:
    raise ValueError("config.evaluate.face_detector is empty; csim and id_score need an SCRFD "
                     ".onnx file (antelopev2/scrfd_10g_bnkps.onnx or buffalo_l/det_10g.onnx)")
  if not os.path.isfile(e.face_detector):
    raise ValueError(f"config.evaluate.face_detector = {e.face_detector}: no such file")
  return SCRFD(e.face_detector)


def _padded_batches(x: np.ndarray, batch: int, multiple: int = 1):
  """(start, n, rows) over `x` in batches of `batch` rows. A short last batch is filled (with
  copies of the last row, which the caller drops) up to the next power of two, rounded up to
  `multiple` (the device count) and at most `batch`: a handful of shapes compile once each, and a
  one-clip video does not pay for a full batch of clips."""
  for start in range(0, len(x), batch):
    n = min(batch, len(x) - start)
    size = min(batch, -(-(1 << (n - 1).bit_length()) // multiple) * multiple)
    yield start, n, np.concatenate([x[start:start + n], np.repeat(x[-1:], size - n, 0)])


def run(config) -> dict:
  import jax
  from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
  from tqdm import tqdm

  from sem_repa_jax.eval.cpbd import cpbd_frames
  from sem_repa_jax.eval.fid import FeatureStatistics, frechet_distance
  from sem_repa_jax.eval.fvd import clips_of
  from sem_repa_jax.eval.identity import video_identity_scores
  from sem_repa_jax.eval.motion import frame_pairs
  from sem_repa_jax.eval.suite import (CLIP_METRICS, FEATURES, IDENTITY_METRICS, PAIR_METRICS,
                                       SET_METRICS, batch_function, check_metrics, clip_function,
                                       motion_function, text_function)
  from sem_repa_jax.eval.text_score import clip_pixels

  e = config.evaluate
  names = check_metrics(list(e.metrics))
  pairs = pair_videos(list_videos(e.generated, "config.evaluate.generated"),
                      list_videos(e.reference, "config.evaluate.reference"))
  for field in ("batch_size", "clip_batch_size", "clip_length", "clip_stride", "flow_batch_size"):
    if e[field] < 1:
      raise ValueError(f"config.evaluate.{field} must be >= 1; got {e[field]}")
  identity_names = [m for m in names if m in IDENTITY_METRICS]
  detector = _face_detector(e) if identity_names else None
  if "id_score" in names and e.id_reference and not os.path.isdir(e.id_reference):
    raise ValueError(f"config.evaluate.id_reference = {e.id_reference}: not a folder")
  devices = jax.local_devices()
  mesh = Mesh(np.asarray(devices), ("data",))
  rounded = lambda n: -(-n // len(devices)) * len(devices)
  batch, clip_batch, flow_batch = (rounded(e[f]) for f in ("batch_size", "clip_batch_size",
                                                             "flow_batch_size"))
  rows = NamedSharding(mesh, P("data"))   # frames split over devices, networks replicated
  networks = _load_networks(e, names, NamedSharding(mesh, P()))
  variables = {m: v for m, (_, v) in networks.items()}
  frame_names = [m for m in names if m in PAIR_METRICS or m == "fid"]
  clip_names = [m for m in names if m in CLIP_METRICS]
  fn = batch_function(frame_names, networks) if frame_names else None
  clip_fn = clip_function(clip_names, networks) if clip_names else None
  motion_fn = motion_function(networks) if "motion_score" in names else None
  text_fn = text_function(networks) if "text_score" in names else None
  prompt_ids = _prompt_ids(e, [n for n, _, _ in pairs], networks["text_score"][0]) \
      if text_fn is not None else {}
  stats = {(m, side): FeatureStatistics(FEATURES[m]) for m in names if m in SET_METRICS
           for side in ("generated", "reference")}
  per_video, frames_total, clips_total = {}, 0, 0
  logging.info("evaluate: %d video pairs, metrics %s", len(pairs), ", ".join(names))
  for name, gpath, rpath in tqdm(pairs, desc="evaluate", unit="video",
                                 disable=not config.get("progress_bar", True)):
    g, r = read_video(gpath), read_video(rpath)
    if g.shape != r.shape:
      raise ValueError(f"video {name!r}: {gpath} is {g.shape[0]} frames of (H x W) {g.shape[1]}x"
                       f"{g.shape[2]}, {rpath} is {r.shape[0]} frames of {r.shape[1]}x{r.shape[2]};"
                       " a pair must agree in frame count and size")
    sums = {m: [] for m in names if m in PAIR_METRICS}
    if fn is not None:
      for (start, n, gb), (_, _, rb) in zip(_padded_batches(g, batch, len(devices)),
                                            _padded_batches(r, batch, len(devices))):
        out = jax.device_get(fn(variables, jax.device_put(gb, rows), jax.device_put(rb, rows)))
        for m in sums:
          sums[m].append(np.asarray(out[m][:n], np.float64))
        if "fid" in names:
          stats["fid", "generated"].add(out["fid_generated"][:n])
          stats["fid", "reference"].add(out["fid_reference"][:n])
    per_video[name] = {m: float(np.mean(np.concatenate(v))) for m, v in sums.items()}
    if clip_fn is not None:
      where = f"video {name!r} ({gpath})"
      gc, rc = (clips_of(x, e.clip_length, e.clip_stride, where) for x in (g, r))
      for (_, n, gb), (_, _, rb) in zip(_padded_batches(gc, clip_batch, len(devices)),
                                        _padded_batches(rc, clip_batch, len(devices))):
        out = jax.device_get(clip_fn(variables, jax.device_put(gb, rows), jax.device_put(rb, rows)))
        for m in clip_names:
          for side in ("generated", "reference"):
            stats[m, side].add(out[f"{m}_{side}"][:n])
      per_video[name]["clips"] = int(len(gc))
      clips_total += len(gc)
    if motion_fn is not None:
      raft_config = networks["motion_score"][0].config
      gp, rp = (frame_pairs(x, raft_config, f"video {name!r} ({path})")
                for x, path in ((g, gpath), (r, rpath)))
      for (_, n, gb), (_, _, rb) in zip(_padded_batches(gp, flow_batch, len(devices)),
                                        _padded_batches(rp, flow_batch, len(devices))):
        out = jax.device_get(motion_fn(variables, jax.device_put(gb, rows),
                                       jax.device_put(rb, rows)))
        for side in ("generated", "reference"):
          stats["motion_score", side].add(out[f"motion_score_{side}"][:n])
      per_video[name]["flows"] = int(len(gp))
    if "cpbd" in names:
      per_video[name]["cpbd"] = float(np.mean(cpbd_frames(g)))
    if text_fn is not None:
      clip_module = networks["text_score"][0]
      pixels = clip_pixels(g, clip_module.config.vision.image_size)
      ids, mask = prompt_ids[name]
      cosines = []
      for _, n, pb in _padded_batches(pixels, batch, len(devices)):
        out = text_fn(variables, jax.device_put(pb, rows), ids, mask)
        cosines.append(np.asarray(jax.device_get(out), np.float64)[:n])
      per_video[name]["text_score"] = float(np.mean(np.concatenate(cosines)))
    if identity_names:
      image = reference_image(e.id_reference, name) if "id_score" in names and e.id_reference \
          else None
      scores = video_identity_scores(identity_names, *networks[identity_names[0]], g, r, detector,
                                     image, e.face_crop, where=f"video {name!r} ({rpath})")
      for m, score in scores.items():
        per_video[name][m] = score.score if score.count else None
        per_video[name][f"{m}_frames"] = score.count
    per_video[name]["frames"] = int(len(g))
    frames_total += len(g)
  summary = {"videos": len(pairs), "frames": frames_total}
  if clip_names:
    summary["clips"] = clips_total
  for m in names:
    if m in SET_METRICS:
      unit = "clips" if m in CLIP_METRICS else "flows" if m == "motion_score" else "frames"
      summary[m] = frechet_distance(*stats[m, "generated"].mean_cov(f"{m.upper()}, generated {unit}"),
                                    *stats[m, "reference"].mean_cov(f"{m.upper()}, reference {unit}"))
    elif m in IDENTITY_METRICS:
      scored = [v[m] for v in per_video.values() if v[m] is not None]
      summary[m] = float(np.mean(scored)) if scored else None
      summary[f"{m}_frames"] = sum(v[f"{m}_frames"] for v in per_video.values())
      if summary[f"{m}_frames"] < frames_total:
        logging.warning("evaluate: %s scored %d of %d frames (no face detected in the others)",
                        m, summary[f"{m}_frames"], frames_total)
    else:
      summary[m] = float(np.mean([v[m] for v in per_video.values()]))
  result = {"summary": summary, "per_video": per_video, "metrics": list(names),
            "generated": e.generated, "reference": e.reference}
  os.makedirs(config.workdir, exist_ok=True)
  from sem_repa_jax.eval.video_io import write_bytes
  write_bytes(os.path.join(config.workdir, "metrics.json"),
              json.dumps(result, indent=2, sort_keys=True).encode())
  write_bytes(os.path.join(config.workdir, "evaluation.md"), markdown_table(summary, names).encode())
  logging.info("evaluate: %s", ", ".join(
      f"{m} {'n/a' if summary[m] is None else format(summary[m], '.4g')}" for m in names))
  return result
