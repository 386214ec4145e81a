"""The `sample` job's StableAnimator wiring (config.pipeline = 'stableanimator',
configs/sample_stableanimator.py): the converted folders (each checked for its kind), the driving
skeletons (a folder of skeleton images, or keypoints aligned onto the reference's and drawn), the
reference's ArcFace embedding, the face masks and the face embedder for HJB, and the pipeline
(pipelines/stableanimator.py).
"""
import dataclasses
import os

import numpy as np
from absl import logging

from sem_repa_jax.diffusion.hjb import HJBConfig
from sem_repa_jax.jobs._sample_svd import model_folder
from sem_repa_jax.jobs.sample import Sampler, load_image
from sem_repa_jax.pipelines import stableanimator as sa

# (sub-folder of model_dir, config field that overrides it, the conversion kind it must hold)
FOLDERS = (("unet", "unet_dir", "svd-unet"), ("pose_net", "pose_net_dir", "pose-net"),
           ("face_encoder", "face_encoder_dir", "face-encoder"), ("vae", "vae_dir", "svd-vae"),
           ("image_encoder", "image_encoder_dir", "clip-vision"))
SETTINGS = ("height", "width", "num_inference_steps", "min_guidance_scale", "max_guidance_scale",
            "fps", "motion_bucket_id", "noise_aug_strength", "decode_chunk_size", "sigma_min",
            "sigma_max", "timestep_spacing", "tile_size", "tile_overlap")


def driving_poses(config, height: int, width: int) -> np.ndarray:
  """(F, height, width, 3) uint8 skeletons: config.poses is a folder of frame_<i>.png skeleton
  images (resized if needed), or a keypoints .npz drawn at the output size, first aligned onto
  config.reference_keypoints (one frame) when that is set: by the official least-squares fit, or
  by StableAnimator++'s learned aligner when config.pose_aligner names its exported folder."""
  from data_pipelines import video
  if config.poses.endswith(".npz"):
    from data_pipelines.poses import align, draw, keypoints
    kp = keypoints.load_keypoints(config.poses)
    if config.reference_keypoints:
      ref = keypoints.load_keypoints(config.reference_keypoints)
      if ref.stacked:
        ref = ref.frame(0)
      if config.get("pose_aligner"):
        from sem_repa_jax.models.pretrained import load_pretrained
        from sem_repa_jax.models.pretrained import read_pretrained_config
        if not os.path.isfile(os.path.join(config.pose_aligner, "config.json")) or \
            read_pretrained_config(config.pose_aligner)["kind"] != "pose-aligner":
          raise ValueError(f"config.pose_aligner = {config.pose_aligner}: expected the folder "
                           "job align_poses exports (<workdir>/export/pose_aligner)")
        module, variables = load_pretrained(config.pose_aligner)
        kp = align.align_learned(ref, kp, module, variables, image_size=(height, width))
        logging.info("poses aligned onto %s by the learned aligner %s",
                     config.reference_keypoints, config.pose_aligner)
      else:
        kp = align.align_to_reference(ref, kp)
        logging.info("poses aligned onto %s (least squares)", config.reference_keypoints)
    return draw.draw_poses(kp, height, width)
  if config.reference_keypoints:
    raise ValueError("config.reference_keypoints aligns keypoints: set config.poses to the "
                     "driving keypoints .npz, not to a folder of drawn skeletons")
  frames = video.read_frame_folder(config.poses)
  if frames.shape[1:3] == (height, width):
    return frames
  return resized_frames(frames, height, width)


def resized_frames(frames, height, width, nearest=False):
  """Skeleton images bilinearly, masks nearest, to the output size (PIL)."""
  from PIL import Image
  mode = Image.NEAREST if nearest else Image.BILINEAR
  return np.stack([np.asarray(Image.fromarray(f).resize((width, height), mode)) for f in frames])


def face_masks(config, num_frames: int, height: int, width: int) -> np.ndarray:
  """(F, height, width) uint8 of config.face_masks, a folder of frame_<i>.png masks (face 255)."""
  from data_pipelines import video
  masks = np.stack([video.read_image(p, gray=True) for p in video.frame_files(config.face_masks)])
  if len(masks) < num_frames:
    raise ValueError(f"config.face_masks = {config.face_masks}: {len(masks)} masks for "
                     f"{num_frames} frames")
  masks = masks[:num_frames]
  if masks.shape[1:] == (height, width):
    return masks
  return resized_frames(masks, height, width, nearest=True)


def reference_id_embedding(image, detector, arcface) -> "np.ndarray | None":
  """The raw ArcFace embedding (D,) of the reference's face through the one face path
  (models/encoders/face_embed.py: the detector's best face, landmark-aligned to 112, embedded,
  not L2-normalized, as the official antelopev2 `embedding`); None when no face is found.
  image: RGB uint8 (H, W, 3) at its own size; arcface: (module, variables)."""
  from sem_repa_jax.models.encoders import face_embed
  crops, present = face_embed.aligned_faces(np.asarray(image)[None], detector, crop="landmarks")
  if not present[0]:
    return None
  return face_embed.embed(*arcface, crops)[0].astype(np.float32)


def face_embedder_of(config, needed: bool = False) -> tuple:
  """(module, variables) of the ArcFace folder (config.arcface_dir, else model_dir/arcface) when
  `needed` or when the reference's face is to be detected and embedded; () otherwise."""
  from sem_repa_jax.models import load_pretrained
  if needed or (config.face_detector and not config.id_embedding):
    return load_pretrained(model_folder(config, "arcface", "arcface_dir", "arcface"))
  return ()


def config_id_embedding(config, image, face_embedder, without: str) -> "np.ndarray | None":
  """The reference's raw ArcFace embedding (D,): config.id_embedding (a .npy), else the face
  config.face_detector (SCRFD .onnx) finds in `image`, embedded by face_embedder; None, with a
  warning saying `without` (what the model sees instead), when neither is set or no face is
  found."""
  if config.id_embedding:
    if not os.path.isfile(config.id_embedding):
      raise FileNotFoundError(f"config.id_embedding = {config.id_embedding}: no such .npy file")
    return np.load(config.id_embedding).astype(np.float32).reshape(-1)
  if config.face_detector:
    from sem_repa_jax.models.encoders.face_detect import SCRFD
    found = reference_id_embedding(image, SCRFD(config.face_detector), face_embedder)
    if found is None:
      logging.warning("%s: no face found in the reference: %s", config.image, without)
    return found
  logging.warning("config.id_embedding and config.face_detector are empty: %s", without)
  return None


def setting_values(config) -> dict:
  """The SETTINGS fields of the config (decode_chunk_size 0: every frame in one chunk, None)."""
  values = {name: config[name] for name in SETTINGS}
  values["decode_chunk_size"] = values["decode_chunk_size"] or None
  return values


def settings_from_config(config, num_frames: int) -> sa.AnimationSettings:
  values = setting_values(config)
  hjb = None
  if config.hjb.enabled:
    fields = {f.name for f in dataclasses.fields(HJBConfig)}
    hjb = HJBConfig(**{k: v for k, v in config.hjb.items() if k in fields})
  return sa.AnimationSettings(num_frames=num_frames, hjb=hjb, **values)


def stableanimator_sampler(config) -> Sampler:
  from PIL import Image
  from sem_repa_jax.methods.stableanimator.model import load_stableanimator
  from sem_repa_jax.models import load_pretrained
  from sem_repa_jax.models.pretrained import build_module
  from sem_repa_jax.pipelines.images import fit_to_aspect
  dirs = {sub: model_folder(config, sub, field, kind) for sub, field, kind in FOLDERS}
  poses = driving_poses(config, config.height, config.width)
  num_frames = min(len(poses), config.num_frames) if config.num_frames else len(poses)
  poses = poses[:num_frames]
  settings = settings_from_config(config, num_frames)
  settings.check(build_module(dirs["vae"]).config.spatial_compression)
  if settings.hjb is not None and not (config.face_masks and config.reference_face_mask):
    raise ValueError("config.hjb.enabled needs config.face_masks (the driving video's face "
                     "masks) and config.reference_face_mask (the reference image's)")
  hjb_inputs = {}
  face_embedder = face_embedder_of(config, needed=settings.hjb is not None)
  image = load_image(config, settings.height, settings.width)
  id_embedding = config_id_embedding(config, image, face_embedder, "the face tokens see a zero "
                                     "ArcFace embedding (as the official)")
  if settings.hjb is not None:
    mask, _ = fit_to_aspect(Image.open(config.reference_face_mask).convert("L"), config.height,
                            config.width, config.get("image_fit", "crop"))
    hjb_inputs = {"face_masks": face_masks(config, num_frames, config.height, config.width),
                  "reference_face_mask": np.asarray(mask)}
  model, variables = load_stableanimator(dirs["unet"], dirs["pose_net"], dirs["face_encoder"],
                                         attention=config.attention)
  others = [x for sub in ("vae", "image_encoder") for x in load_pretrained(dirs[sub])]
  pipe = sa.StableAnimatorPipeline(model, variables, *others, *face_embedder,
                                   progress=config.progress_bar)
  if id_embedding is None:
    id_embedding = np.zeros(model.face_encoder_config.id_embeddings_dim, np.float32)

  def generate(key):
    out = pipe(image, poses, id_embedding, key=key, settings=settings, **hjb_inputs)
    return out["video"], np.asarray(out["latents"])

  payload = {"pipeline": "stableanimator", "settings": dataclasses.asdict(settings),
             "models": dirs, "poses": config.poses, "num_frames": num_frames}
  return Sampler(generate, pipe.progress, settings.fps, payload)
