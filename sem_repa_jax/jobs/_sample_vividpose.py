"""The `sample` job's VividPose wiring (config.pipeline = 'vividpose', configs/sample_vividpose.py):
the converted folders (each checked for its kind), the driving skeleton maps and dense pose maps
(frame folders, checked against each other), the reference's ArcFace embedding, and the pipeline
(pipelines/vividpose.py).
"""
import dataclasses
import os

import numpy as np

from sem_repa_jax.jobs._sample_stableanimator import (config_id_embedding, face_embedder_of,
                                                      resized_frames, setting_values)
from sem_repa_jax.jobs._sample_svd import model_folder
from sem_repa_jax.jobs.sample import Sampler, load_image
from sem_repa_jax.pipelines import vividpose as vp

# (sub-folder of model_dir, config field that overrides it, the conversion kind it must hold)
FOLDERS = (("unet", "unet_dir", "svd-unet"), ("reference_net", "reference_net_dir", "sd-unet"),
           ("pose_controller", "pose_controller_dir", "vividpose-pose-controller"),
           ("id_controller", "id_controller_dir", "vividpose-id-controller"),
           ("vae", "vae_dir", "svd-vae"), ("image_encoder", "image_encoder_dir", "clip-vision"))
MAPS = ("skeletons", "dense_maps")


def condition_maps(config, field: str, height: int, width: int) -> "np.ndarray | None":
  """(F, height, width, 3) uint8 of the frame folder config.<field> (frame_<i>.png or <i>.png,
  one RGB image per frame, aligned with the video; another size of the same aspect is resized
  bilinearly), or None when the field is empty."""
  from data_pipelines import video
  path = config[field]
  if not path:
    return None
  if not os.path.isdir(path):
    raise FileNotFoundError(f"config.{field} = {path}: no such folder (one RGB image per frame)")
  try:
    frames = video.read_frame_folder(path)
  except video.VideoError as e:
    raise ValueError(f"config.{field}: {e}") from None
  h, w = frames.shape[1:3]
  if h * width != w * height:
    raise ValueError(f"config.{field} = {path}: {w}x{h} images; expected the frames' aspect "
                     f"{width}x{height} (the maps must be aligned with the video)")
  return frames if (h, w) == (height, width) else resized_frames(frames, height, width)


def driving_maps(config, height: int, width: int) -> tuple:
  """(skeletons, dense_maps, num_frames): the maps given, cut to config.num_frames (0: all)."""
  maps = {field: condition_maps(config, field, height, width) for field in MAPS}
  given = {field: len(m) for field, m in maps.items() if m is not None}
  if not given:
    raise ValueError("set config.skeletons and/or config.dense_maps (frame folders of the "
                     "driving skeleton maps and dense pose maps)")
  if len(set(given.values())) > 1:
    raise ValueError(f"config.skeletons has {given['skeletons']} frames and config.dense_maps "
                     f"{given['dense_maps']}: expected one of each per frame")
  count = next(iter(given.values()))
  num_frames = min(count, config.num_frames) if config.num_frames else count
  cut = {field: None if m is None else m[:num_frames] for field, m in maps.items()}
  return cut["skeletons"], cut["dense_maps"], num_frames


def vividpose_sampler(config) -> Sampler:
  from sem_repa_jax.methods.vividpose.model import load_vividpose
  from sem_repa_jax.models import load_pretrained
  from sem_repa_jax.models.pretrained import build_module
  dirs = {sub: model_folder(config, sub, field, kind) for sub, field, kind in FOLDERS}
  skeletons, dense_maps, num_frames = driving_maps(config, config.height, config.width)
  settings = vp.VividPoseSettings(num_frames=num_frames, **setting_values(config))
  settings.check(build_module(dirs["vae"]).config.spatial_compression)
  face_embedder = face_embedder_of(config)
  image = load_image(config, settings.height, settings.width)
  id_embedding = config_id_embedding(config, image, face_embedder, "no identity tokens (the ID "
                                     "branch adds 0, as with a dropped identity)")
  model, variables = load_vividpose(dirs["unet"], dirs["pose_controller"], dirs["id_controller"],
                                    attention=config.attention)
  others = [x for sub in ("reference_net", "vae", "image_encoder")
            for x in load_pretrained(dirs[sub], attention=config.attention)]
  pipe = vp.VividPosePipeline(model, variables, *others, progress=config.progress_bar)

  def generate(key):
    out = pipe(image, skeletons, dense_maps, id_embedding, key=key, settings=settings)
    return out["video"], np.asarray(out["latents"])

  payload = {"pipeline": "vividpose", "settings": dataclasses.asdict(settings), "models": dirs,
             "skeletons": config.skeletons, "dense_maps": config.dense_maps,
             "num_frames": num_frames, "id_embedding": id_embedding is not None}
  return Sampler(generate, pipe.progress, settings.fps, payload)
