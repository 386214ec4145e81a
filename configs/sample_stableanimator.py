"""StableAnimator animation (job `sample`, pipeline 'stableanimator'): a reference image driven by
skeletons, optionally with HJB face optimization.

python -m sem_repa_jax.main --config configs/sample_stableanimator.py \
  --config.image=ref.png --config.poses=driving/keypoints.npz \
  --config.reference_keypoints=ref_keypoints.npz --config.id_embedding=ref_id.npy \
  --config.model_dir=weights/stableanimator

model_dir holds the converted unet/ (python -m conversion svd-unet --src unet.pth --config
<SVD-XT unet/config.json>), pose_net/ (pose-net), face_encoder/ (face-encoder), vae/ (svd-vae)
and image_encoder/ (clip-vision) of SVD-XT, and for HJB arcface/ (python -m conversion arcface,
glintr100); *_dir fields override each. poses: a folder of frame_<i>.png skeleton images, or a
DWPose keypoints .npz (python -m data_pipelines.poses) drawn at the output size, aligned onto
reference_keypoints when given. id_embedding: a .npy of the reference face's raw 512-d ArcFace
embedding, or face_detector (SCRFD .onnx) to detect and embed it with arcface/ (neither, or no
face found: zeros, as the official). The defaults are the official
inference script's (512x512, 25 steps, guidance 3.0, 16-frame windows overlapping by 4,
chunks of 4).
"""
import ml_collections

from configs import base


def get_config() -> ml_collections.ConfigDict:
  c = base.get_config()
  c.job = "sample"
  c.pipeline = "stableanimator"
  c.workdir = "runs/sample_stableanimator"

  c.image = ""                    # the reference image
  c.poses = ""                    # skeleton images folder, or a keypoints .npz
  c.reference_keypoints = ""      # the reference's keypoints .npz: align the driving ones onto it
  c.pose_aligner = ""             # an align_poses export (kind pose-aligner): learned alignment
  c.id_embedding = ""             # .npy (512,) raw ArcFace embedding of the reference face, or
  c.face_detector = ""            # an SCRFD .onnx (antelopev2 scrfd_10g_bnkps): detect + embed it
  c.model_dir = ""
  c.unet_dir = ""                 # empty: model_dir/unet (each below likewise)
  c.pose_net_dir = ""
  c.face_encoder_dir = ""
  c.vae_dir = ""
  c.image_encoder_dir = ""
  c.arcface_dir = ""              # HJB's face embedder; empty: model_dir/arcface

  sampling_fields(c)

  # HJB face optimization (diffusion/hjb.py HJBConfig; official values).
  c.hjb = ml_collections.ConfigDict()
  c.hjb.enabled = False
  c.hjb.first_step = 0
  c.hjb.last_step = 20
  c.hjb.iterations = 3
  c.hjb.learning_rate = 0.1
  c.hjb.face_size = 112
  c.hjb.adam_eps = 1e-8
  c.face_masks = ""               # HJB: folder of the driving video's frame_<i>.png face masks
  c.reference_face_mask = ""      # HJB: the reference image's face mask (its own size)

  c.num_samples = 1
  c.image_fit = "crop"
  return c


def sampling_fields(c: ml_collections.ConfigDict, **overrides) -> None:
  """The SVD sampler and window fields of pipelines/windows.py's WindowedSettings subclasses, field
  by field (the official StableAnimator values; overrides: another pipeline's defaults)."""
  values = dict(
      height=512, width=512,
      num_frames=0,                 # 0: every pose; else the first num_frames
      num_inference_steps=25, min_guidance_scale=3.0, max_guidance_scale=3.0, fps=7,
      motion_bucket_id=127, noise_aug_strength=0.02,
      decode_chunk_size=4,          # 0: all frames in one chunk
      sigma_min=0.002, sigma_max=700.0, timestep_spacing="leading",
      tile_size=16,                 # frames per window (frame 0 + 15); longer videos are windowed
      tile_overlap=4)
  unknown = set(overrides) - set(values)
  if unknown:
    raise KeyError(f"sampling_fields: no field {sorted(unknown)}")
  for name, value in dict(values, **overrides).items():
    c[name] = value
