"""Annotation for VividPose (configs/vividpose*.py train on it): StableAnimator's records
(configs/annotate_stableanimator.py: video and reference latents of the SVD VAE, CLIP image and raw
ArcFace embeddings of the reference, skeleton images, face masks) plus the dense pose maps
(docs/data.md, "VividPose records").

  python -m sem_repa_jax.main --config configs/annotate_vividpose.py \
      --config.data.root=DATA --config.annotate.vae_dir=svd/vae \
      --config.annotate.clip_dir=svd/image_encoder --config.annotate.arcface_dir=arcface

DATA is the official layout with a dense/ folder per clip (DATA/{rec,vec}/<id>/{images,faces,poses,
dense}/frame_<i>.png; dense/: the SMPL-X render of each frame); a clip without dense/ is an error
naming it. With data.synthetic_clips > 0 and a new data.root, synthetic clips are rendered there,
dense/ included (data_pipelines/dense_maps.py). The paper's geometry: 14 frames of 768 x 512
(portrait); the defaults here are tiny.
"""
from configs import annotate_stableanimator


def get_config():
  c = annotate_stableanimator.get_config()
  c.workdir = "runs/annotate_vp"
  c.data.root = "runs/annotate_vp/synthetic"
  c.data.num_frames = 14                    # VividPose: 14
  c.data.height = c.data.synthetic_height = 64    # VividPose: 768
  c.data.width = c.data.synthetic_width = 48      # VividPose: 512
  c.annotate.method = "vividpose"
  return c
