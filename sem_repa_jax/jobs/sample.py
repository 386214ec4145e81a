"""Job `sample`: image-to-video from converted weights; `config.pipeline` names the model family:
'cogvideox_i2v' (the default; configs/sample_cogvideox.py, wired here), 'svd_i2v' (Stable Video
Diffusion; configs/sample_svd.py, wired in jobs/_sample_svd.py), 'stableanimator' (a reference
driven by skeletons; configs/sample_stableanimator.py, jobs/_sample_stableanimator.py) or
'vividpose' (driven by skeletons and dense pose maps; configs/sample_vividpose.py,
jobs/_sample_vividpose.py).

All write the same outputs, through `write_samples`: WORKDIR/samples/<image stem>_<i>.mp4, a PNG
strip of the frames beside it, the final latents (.npy) for inspection, and settings.json; every
file appears atomically.
"""
import dataclasses
import json
import os
from typing import Callable, NamedTuple

import jax
import numpy as np
from absl import logging

from sem_repa_jax.diffusion.samplers import HostProgress
from sem_repa_jax.pipelines import cogvideox_i2v as i2v
from sem_repa_jax.pipelines.images import fit_to_aspect

PIPELINES = ("cogvideox_i2v", "svd_i2v", "stableanimator", "vividpose")


def _find(tree, key):
  """The first value under `key` anywhere in a nested dict/list of a converted model's kwargs."""
  if isinstance(tree, dict):
    if key in tree:
      return tree[key]
    tree = list(tree.values())
  if isinstance(tree, (list, tuple)):
    for v in tree:
      found = _find(v, key)
      if found is not None:
        return found
  return None


def model_facts(transformer_dir: str, vae_dir: str, config) -> i2v.ModelFacts:
  """ModelFacts from the converted models' config.json (diffusers config names), config overrides."""
  from sem_repa_jax.models import pretrained
  t = pretrained.read_pretrained_config(transformer_dir)["module_kwargs"]
  v = pretrained.read_pretrained_config(vae_dir)["module_kwargs"]
  in_channels = _find(t, "in_channels")
  if in_channels is None:
    raise ValueError(f"{transformer_dir}/config.json: no in_channels in module_kwargs")
  scaling = float(config.vae_scaling_factor) or _find(v, "scaling_factor")
  if scaling is None:
    raise ValueError(f"{vae_dir}/config.json: no scaling_factor; set --config.vae_scaling_factor")
  blocks = _find(v, "block_out_channels")
  return i2v.ModelFacts(
      latent_channels=int(in_channels) // 2, vae_scaling_factor=float(scaling),
      invert_scale_latents=bool(_find(v, "invert_scale_latents") or False),
      patch_size_t=_find(t, "patch_size_t"), use_ofs=_find(t, "ofs_embed_dim") is not None,
      spatial_compression=2 ** (len(blocks) - 1) if blocks else 8,
      temporal_compression=int(_find(v, "temporal_compression_ratio") or 4),
      prediction_type=config.prediction_type)


def load_prompt_embeds(path: str, negative_path: str = ""):
  """(prompt_embeds (B, L, D), negative or None) from .npy / .npz / .safetensors files."""
  if not path:
    raise ValueError("config.prompt_embeds is empty: give a .npy / .npz / .safetensors of T5 "
                     "prompt embeddings (job encode_text writes them)")

  def load(p):
    if not os.path.isfile(p):
      raise FileNotFoundError(f"prompt embeddings {p!r}: no such file")
    if p.endswith(".npy"):
      return {"prompt_embeds": np.load(p)}
    if p.endswith(".npz"):
      with np.load(p) as z:
        return dict(z)
    if p.endswith(".safetensors"):
      from safetensors.numpy import load_file
      return load_file(p)
    raise ValueError(f"prompt embeddings {p!r}: expected .npy, .npz or .safetensors")

  entries = load(path)
  if "prompt_embeds" not in entries:
    raise ValueError(f"{path}: no 'prompt_embeds' entry (found {sorted(entries)})")
  pos, neg = entries["prompt_embeds"], entries.get("negative_prompt_embeds")
  if negative_path:
    neg_entries = load(negative_path)
    neg = neg_entries.get("negative_prompt_embeds", neg_entries.get("prompt_embeds"))
  fix = lambda a: None if a is None else (a[None] if a.ndim == 2 else a).astype(np.float32)
  pos, neg = fix(pos), fix(neg)
  if pos.ndim != 3:
    raise ValueError(f"{path}: prompt_embeds of shape {pos.shape}: expected (L, D) or (B, L, D)")
  return pos, neg


def write_strip(path: str, frames_uint8: np.ndarray, max_frames: int = 13) -> str:
  """A PNG of up to `max_frames` evenly spaced frames side by side (atomic write)."""
  from PIL import Image
  idx = np.unique(np.linspace(0, len(frames_uint8) - 1, min(max_frames, len(frames_uint8))).round()
                  .astype(int))
  strip = np.concatenate(list(frames_uint8[idx]), axis=1)
  tmp = path + ".tmp.png"
  Image.fromarray(strip).save(tmp)
  os.replace(tmp, path)
  return path


class Sampler(NamedTuple):
  """What a pipeline's wiring hands the shared writer: generate(key) -> (video (B, F, H, W, 3) in
  [-1, 1], final latents as saved), the pipeline's progress bar, the mp4 frame rate and the
  settings.json payload."""
  generate: Callable[[jax.Array], tuple]
  progress: HostProgress
  fps: float
  settings: dict


def load_image(config, height: int, width: int):
  """config.image as an RGB PIL image at the frames' aspect (config.image_fit; logged)."""
  from PIL import Image
  image, note = fit_to_aspect(Image.open(config.image).convert("RGB"), height, width,
                              config.get("image_fit", "crop"))
  if note:
    logging.info("%s", note)
  return image


def cogvideox_sampler(config) -> Sampler:
  from sem_repa_jax.models import load_pretrained
  if not config.model_dir and not (config.transformer_dir and config.vae_dir):
    raise ValueError("set config.model_dir (with transformer/ and vae/) or both "
                     "config.transformer_dir and config.vae_dir")
  tdir = config.transformer_dir or os.path.join(config.model_dir, "transformer")
  vdir = config.vae_dir or os.path.join(config.model_dir, "vae")
  facts = model_facts(tdir, vdir, config)
  settings = i2v.SamplingSettings(
      height=config.height, width=config.width, num_frames=config.num_frames,
      num_inference_steps=config.num_inference_steps, guidance_scale=config.guidance_scale,
      use_dynamic_cfg=config.use_dynamic_cfg, sampler=config.sampler,
      snr_shift_scale=config.snr_shift_scale, timestep_spacing=config.timestep_spacing)
  settings.check(facts)
  pos, neg = load_prompt_embeds(config.prompt_embeds, config.negative_prompt_embeds)
  if pos.shape[0] != 1:
    raise ValueError(f"{config.prompt_embeds}: one prompt expected, got {pos.shape[0]}")
  if settings.guidance_scale > 1 and neg is None:
    raise ValueError(f"guidance_scale={settings.guidance_scale} needs negative prompt embeddings: add "
                     "'negative_prompt_embeds' to the prompt file or set config.negative_prompt_embeds")
  image = load_image(config, settings.height, settings.width)

  transformer, tvars = load_pretrained(tdir)
  vae, vvars = load_pretrained(vdir)
  pipe = i2v.CogVideoXImageToVideo(transformer, tvars, vae, vvars, facts=facts,
                                   progress=config.progress_bar)

  def generate(key):
    if config.num_windows > 1:
      out = pipe.generate_long(image, pos, neg, key=key, num_windows=config.num_windows,
                               settings=settings)
      return out["video"], np.stack([np.asarray(w) for w in out["windows"]], axis=1)
    out = pipe(image, pos, neg, key=key, settings=settings)
    return out["video"], np.asarray(out["latents"])

  return Sampler(generate, pipe.progress, config.fps,
                 {"settings": dataclasses.asdict(settings), "facts": dataclasses.asdict(facts)})


def run(config) -> None:
  pipeline = config.get("pipeline", "cogvideox_i2v")
  if pipeline not in PIPELINES:
    raise ValueError(f"config.pipeline = {pipeline!r}: expected one of {', '.join(PIPELINES)}")
  if not config.image or not os.path.isfile(config.image):
    raise FileNotFoundError(f"config.image={config.image!r}: no such image file")
  if config.num_samples < 1:
    raise ValueError(f"config.num_samples = {config.num_samples}: expected at least 1")
  if pipeline == "svd_i2v":
    from sem_repa_jax.jobs import _sample_svd
    sampler = _sample_svd.svd_sampler(config)
  elif pipeline == "stableanimator":
    from sem_repa_jax.jobs import _sample_stableanimator
    sampler = _sample_stableanimator.stableanimator_sampler(config)
  elif pipeline == "vividpose":
    from sem_repa_jax.jobs import _sample_vividpose
    sampler = _sample_vividpose.vividpose_sampler(config)
  else:
    sampler = cogvideox_sampler(config)
  write_samples(config, sampler)


def write_samples(config, sampler: Sampler) -> None:
  """config.num_samples videos of config.image (seeds seed + i) and settings.json, each file
  written under a temporary name and renamed into place."""
  from data_pipelines.video import write_video
  out_dir = os.path.join(config.workdir, "samples")
  os.makedirs(out_dir, exist_ok=True)
  stem = os.path.splitext(os.path.basename(config.image))[0]
  for i in range(config.num_samples):
    key = jax.random.key(config.seed + i)
    sampler.progress.desc = f"sample {i + 1}/{config.num_samples}"
    video, latents = sampler.generate(key)
    frames = i2v.to_uint8(video)[0]
    base = os.path.join(out_dir, f"{stem}_{i}")
    write_video(base + ".mp4", frames, fps=sampler.fps)
    write_strip(base + ".png", frames)
    tmp = base + ".latents.tmp.npy"
    np.save(tmp, latents)
    os.replace(tmp, base + ".latents.npy")
    logging.info("wrote %s.mp4 (%d frames, %dx%d)", base, *frames.shape[:3])
  path = os.path.join(out_dir, "settings.json")
  with open(path + ".tmp", "w") as f:
    json.dump(sampler.settings, f, indent=2)
  os.replace(path + ".tmp", path)
