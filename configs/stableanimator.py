"""StableAnimator training (job `train_animator`), tiny by default: the real shapes are in
stableanimator_512.py (16 frames 512x512) and stableanimator_576x1024.py (16 frames 576x1024
portrait), which start from this file.

  python -m sem_repa_jax.main --config configs/stableanimator_512.py \
      --config.data.records=runs/annotate_sa/annotations/records \
      --config.model.unet_dir=weights/stableanimator/unet \
      --config.model.pose_net_dir=weights/stableanimator/pose_net \
      --config.model.face_encoder_dir=weights/stableanimator/face_encoder --config.workdir=runs/sa

Records: annotate with annotate.method=stableanimator (docs/data.md). Weights: python -m conversion
svd-unet (SVD-XT's unet/ folder, or StableAnimator's unet.pth with --config), pose-net, face-encoder.
"""
import ml_collections

from configs import base

# The official trainable set (methods/stableanimator/model.py OFFICIAL_TRAINABLE).
OFFICIAL_TRAINABLE = ("params/pose_net/*", "params/face_encoder/*", "params/unet/*attentions_*")


def get_config() -> ml_collections.ConfigDict:
  c = base.get_config()
  c.job = "train_animator"
  c.workdir = "runs/stableanimator"

  c.data = ml_collections.ConfigDict()
  c.data.records = ""              # annotation output (annotate.method=stableanimator)
  c.data.batch_size = 2            # global; divided among processes
  c.data.seed = 0
  c.data.prefetch = 4

  c.model = ml_collections.ConfigDict()
  c.model.unet_dir = ""            # converted svd-unet folder; empty: a fresh U-Net of unet_preset
  c.model.pose_net_dir = ""        # converted pose-net folder; empty: a fresh PoseNet
  c.model.face_encoder_dir = ""    # converted face-encoder folder; empty: a fresh face encoder
  c.model.unet_preset = "svd-xt"   # models/svd/unet.py PRESETS, when there is no unet_dir
  # Overrides of the preset (UNetSpatioTemporalConfig fields); tiny: two levels, 32/64 wide.
  c.model.unet = ml_collections.ConfigDict(dict(
      block_out_channels=(32, 64),
      down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
      up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
      layers_per_block=1, num_attention_heads=(2, 4), cross_attention_dim=128,
      transformer_layers_per_block=1, addition_time_embed_dim=8,
      projection_class_embeddings_input_dim=24, sample_size=None))
  c.model.pose_net = ml_collections.ConfigDict()       # PoseNetConfig fields (out_channels: the
  c.model.face_encoder = ml_collections.ConfigDict()   # U-Net's width); FaceEncoderConfig fields

  c.train = ml_collections.ConfigDict()
  c.train.num_steps = 100
  c.train.trainable = OFFICIAL_TRAINABLE   # fnmatch patterns of the trained variables

  # methods/stableanimator/objective.py ObjectiveConfig, field by field (official values).
  c.objective = ml_collections.ConfigDict()
  c.objective.sigma_density = "cosine_interpolated"   # or 'lognormal'
  c.objective.stratified_sigmas = False
  c.objective.conditioning_dropout = 0.1   # CLIP token r < 0.2, reference latents 0.1 <= r < 0.3
  c.objective.vae_scaling_factor = 0.18215
  c.objective.added_time_ids = (6.0, 127.0, 0.02)
  c.objective.face_mask_weight = 1.0       # loss weight 1 + w M

  # The official optimizer: AdamW lr 1e-5, betas (0.9, 0.999), weight decay 1e-2, constant lr.
  c.optimizer.learning_rate = 1e-5
  c.optimizer.weight_decay = 1e-2
  c.optimizer.schedule = "constant"
  c.checkpoint.every_steps = 500
  return c
