"""The `sample` job's Stable Video Diffusion wiring (config.pipeline = 'svd_i2v',
configs/sample_svd.py): the three converted folders, each checked for its kind before anything
loads, the SamplingSettings from the config, and the pipeline (pipelines/svd_i2v.py).
"""
import dataclasses
import os

import numpy as np

from sem_repa_jax.jobs.sample import Sampler, load_image
from sem_repa_jax.pipelines import svd_i2v

# (sub-folder of model_dir, config field that overrides it, the conversion kind it must hold)
FOLDERS = (("unet", "unet_dir", "svd-unet"), ("vae", "vae_dir", "svd-vae"),
           ("image_encoder", "image_encoder_dir", "clip-vision"))


def model_folder(config, sub: str, field: str, kind: str) -> str:
  """config.<field>, else model_dir/<sub>; it must be a converted folder of `kind`."""
  from sem_repa_jax.models.pretrained import read_pretrained_config
  path = config.get(field) or (os.path.join(config.model_dir, sub) if config.model_dir else "")
  if not path:
    raise ValueError(f"set config.model_dir (with {sub}/ in it) or config.{field}")
  where = f"config.{field}" if config.get(field) else f"config.model_dir/{sub}"
  if not os.path.isdir(path):
    raise FileNotFoundError(f"{where} = {path}: no such folder (write it with `python -m "
                            f"conversion {kind} --src ... --dst {path}`)")
  found = read_pretrained_config(path)["kind"]
  if found != kind:
    raise ValueError(f"{where} = {path} holds a converted {found!r} model; expected a {kind!r} one "
                     f"(python -m conversion {kind})")
  return path


def settings_from_config(config) -> svd_i2v.SamplingSettings:
  """Every SamplingSettings field from the config field of the same name; decode_chunk_size 0
  means all frames of a video in one chunk (None)."""
  values = {}
  for f in dataclasses.fields(svd_i2v.SamplingSettings):
    if f.name not in config:
      raise ValueError(f"config.{f.name} missing: configs/sample_svd.py defines every sampling field")
    values[f.name] = config[f.name]
  values["decode_chunk_size"] = values["decode_chunk_size"] or None
  return svd_i2v.SamplingSettings(**values)


def svd_sampler(config) -> Sampler:
  from sem_repa_jax.models import load_pretrained
  from sem_repa_jax.models.pretrained import build_module
  dirs = {sub: model_folder(config, sub, field, kind) for sub, field, kind in FOLDERS}
  settings = settings_from_config(config)
  # Checked before any weight is read: the VAE's compression is in its config.json.
  settings.check(build_module(dirs["vae"]).config.spatial_compression)
  image = load_image(config, settings.height, settings.width)
  models = [x for sub in ("unet", "vae", "image_encoder")
            for x in load_pretrained(dirs[sub], attention=config.attention)]
  pipe = svd_i2v.SVDImageToVideo(*models, progress=config.progress_bar)

  def generate(key):
    out = pipe(image, key=key, settings=settings)
    return out["video"], np.asarray(out["latents"])

  return Sampler(generate, pipe.progress, settings.fps,
                 {"pipeline": "svd_i2v", "settings": dataclasses.asdict(settings), "models": dirs})
