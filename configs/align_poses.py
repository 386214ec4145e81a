"""StableAnimator++'s learnable pose alignment (job `align_poses`): the aligner trained on pairs of
frames of one clip with the driving pose randomly misaligned (docs/poses.md).

  python -m sem_repa_jax.main --config configs/align_poses.py              # synthetic pairs
  python -m sem_repa_jax.main --config configs/align_poses.py \
      --config.data.keypoints='runs/poses/*/keypoints.npz' --config.workdir=runs/align_poses

At the end the aligner is written to <workdir>/export/pose_aligner (kind 'pose-aligner') and measured
against least squares and SVD only on held-out synthetic identities: <workdir>/alignment.json and
alignment.md. The defaults take about 10 minutes on 2 CPU cores.
"""
import ml_collections

from configs import base


def get_config() -> ml_collections.ConfigDict:
  c = base.get_config()
  c.job = "align_poses"
  c.workdir = "runs/align_poses"

  c.data = ml_collections.ConfigDict()
  c.data.keypoints = ""           # glob of keypoints .npz (pose annotation); empty: synthetic
  c.data.synthetic_clips = 400    # synthetic clips (one identity each) when keypoints is empty
  c.data.synthetic_frames = 16
  c.data.synthetic_seed = 1       # held-out identities use eval.seed
  c.data.height = 480             # synthetic frame size (a quarter of the clips portrait)
  c.data.width = 720
  c.data.pairs_per_clip = 16
  c.data.batch_size = 64          # global
  c.data.seed = 0
  c.data.prefetch = 2

  # The random similarity applied to each driving pose (methods/pose_alignment/objective.py).
  c.misalignment = ml_collections.ConfigDict()
  c.misalignment.max_rotation_deg = 30.0
  c.misalignment.scale_range = (0.5, 2.0)
  c.misalignment.max_translation = 0.3
  c.misalignment.drop_rate = 0.1

  c.model = ml_collections.ConfigDict()   # methods/pose_alignment/aligner.py PoseAlignerConfig
  c.model.width = 64
  c.model.heads = 4
  c.model.encoder_layers = 2
  c.model.fusion_layers = 4
  c.model.mlp_ratio = 4

  c.train = ml_collections.ConfigDict()
  c.train.num_steps = 3000
  c.optimizer.learning_rate = 1e-3
  c.optimizer.schedule = "warmup_cosine"
  c.optimizer.warmup_steps = 100
  c.optimizer.decay_steps = 3000
  c.optimizer.weight_decay = 1e-4

  c.eval = ml_collections.ConfigDict()
  c.eval.num_clips = 64           # held-out synthetic clips (other identities); 0: no table
  c.eval.pairs_per_clip = 4
  c.eval.seed = 2

  c.checkpoint.every_steps = 1000
  c.log_every_steps = 100
  return c
