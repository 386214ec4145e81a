"""VividPose training (job `train_vividpose`) at the paper's geometry: SVD-img2vid's U-Net, an
SD 2.1 ReferenceNet, 14 frames of 768 x 512 (portrait; docs/vividpose.md), the four networks
trained end to end, batch 32 (the paper: 8 GPUs). configs/vividpose_tiny.py is the CPU-sized one.

  python -m sem_repa_jax.main --config configs/vividpose.py \
      --config.data.records=runs/annotate_vp/annotations/records \
      --config.model.unet_dir=weights/svd/unet --config.model.reference_net_dir=weights/sd21/unet \
      --config.workdir=runs/vividpose

Records: annotate with configs/annotate_vividpose.py (docs/data.md, "VividPose records").
Weights: python -m conversion svd-unet (SVD-img2vid's unet/), sd-unet (SD 2.1's unet/); the
controllers start fresh (zero convolutions, to_v_id zero) unless their folders are given.
"""
import ml_collections

from configs import base


def get_config() -> ml_collections.ConfigDict:
  c = base.get_config()
  c.job = "train_vividpose"
  c.workdir = "runs/vividpose"

  c.data = ml_collections.ConfigDict()
  c.data.records = ""              # annotation output (configs/annotate_vividpose.py)
  c.data.batch_size = 32           # global; divided among processes (the paper: 32)
  c.data.seed = 0
  c.data.prefetch = 4

  c.model = ml_collections.ConfigDict()
  c.model.preset = "vividpose"     # methods/vividpose/model.py PRESETS: networks without a folder
  c.model.unet_dir = ""            # converted svd-unet folder (SVD-img2vid), or a VividPose export
  c.model.reference_net_dir = ""   # converted sd-unet folder (SD 2.1)
  c.model.pose_controller_dir = ""     # vividpose-pose-controller folder; empty: fresh (zero convs)
  c.model.id_controller_dir = ""       # vividpose-id-controller folder; empty: fresh

  c.train = ml_collections.ConfigDict()
  c.train.num_steps = 30000
  # The paper: "The denoising UNet, ReferenceNet, identity controller, and pose controller are
  # trained in an end-to-end manner" (fnmatch patterns of the trained variables).
  c.train.trainable = ("params/*",)

  # methods/stableanimator/objective.py ObjectiveConfig, as VividPose trains it
  # (methods/vividpose/objective.py: the paper gives only SVD's EDM training).
  c.objective = ml_collections.ConfigDict()
  c.objective.sigma_density = "cosine_interpolated"   # or 'lognormal' (EDM's)
  c.objective.stratified_sigmas = False
  c.objective.conditioning_dropout = 0.1   # CLIP + ID tokens r < 0.2, image latents 0.1 <= r < 0.3
  c.objective.vae_scaling_factor = 0.18215
  c.objective.added_time_ids = (6.0, 127.0, 0.02)
  c.objective.face_mask_weight = 0.0       # VividPose has no face term; > 0: StableAnimator's

  # The paper gives no optimizer; StableAnimator's (AdamW lr 1e-5, weight decay 1e-2, constant).
  c.optimizer.learning_rate = 1e-5
  c.optimizer.weight_decay = 1e-2
  c.optimizer.schedule = "constant"
  c.checkpoint.every_steps = 500

  # Four networks trained in full: bf16 compute, float32 masters and moments sharded over fsdp,
  # every block rematerialized.
  c.dtype = "bfloat16"
  c.param_dtype = "float32"
  c.remat_policy = "full"
  c.attention = "auto"
  c.mesh.shape = (-1, 8, 1)
  return c
