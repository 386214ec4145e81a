"""Annotation for StableAnimator (configs/stableanimator*.py train on it): video and reference
latents of the SVD VAE, the reference's CLIP image embedding and raw ArcFace embedding, skeleton
images and the face-mask loss weights (docs/data.md, "StableAnimator records").

  python -m sem_repa_jax.main --config configs/annotate_stableanimator.py \
      --config.data.root=DATA --config.annotate.vae_dir=svd/vae \
      --config.annotate.clip_dir=svd/image_encoder --config.annotate.arcface_dir=arcface

DATA is the official layout (DATA/{rec,vec}/<id>/{images,faces,poses}/frame_<i>.png), indexed into
<workdir>/dataset first; data.layout='manifest' reads videos + manifest.jsonl (+ faces/, poses/)
instead. With data.synthetic_clips > 0 and a new data.root, synthetic clips are rendered there in
the official layout. The models are converted folders (python -m conversion svd-vae | clip-vision |
arcface); annotate.face_detector (SCRFD .onnx) detects faces on the frames instead of reading the
masks' boxes. annotate.mask_stride must be the VAE's spatial compression (8): the face masks are
stored at latent size.
"""
import ml_collections

from configs import annotate


def get_config() -> ml_collections.ConfigDict:
  c = annotate.get_config()
  c.workdir = "runs/annotate_sa"
  c.data.root = "runs/annotate_sa/synthetic"
  c.data.layout = "official"                # 'official' (rec/, vec/ folders) | 'manifest'
  c.data.num_frames = 16                    # StableAnimator: 16
  c.data.fps = 8.0                          # frame folders are read as consecutive frames
  c.data.height = 64                        # StableAnimator: 512 (or 1024 x 576)
  c.data.width = 64
  c.data.synthetic_height = 64
  c.data.synthetic_width = 64

  a = c.annotate
  a.method = "stableanimator"
  a.encoder = "vae"                         # the SVD temporal VAE (svd-vae)
  a.vae_scaling_factor = 0.18215
  a.faces = "arcface"                       # raw embedding of the reference's face
  a.face_crop = "landmarks"                 # aligned as insightface embeds (box without landmarks)
  a.clip_dir = ""                           # converted CLIP vision encoder (clip-vision)
  a.mask_stride = 8
  return c
