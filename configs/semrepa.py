"""SemanticREPA training (stage 1 `job=align`, stage 2 `job=finetune`), tiny by default.

The defaults fit the synthetic data that `configs/annotate.py` produces with the lossless latent
codec (spatial factor 2: 48 latent channels) and run on a laptop CPU. The real shapes are in
semrepa_cogvideox_2b.py and semrepa_cogvideox_5b_i2v.py, which start from this file.

  python -m sem_repa_jax.main --config configs/semrepa.py --config.job=align \
      --config.data.records=runs/annotate/annotations/records --config.workdir=runs/align
  python -m sem_repa_jax.main --config configs/semrepa.py --config.job=finetune \
      --config.data.records=... --config.finetune.alignment_dir=runs/align/alignment_modules \
      --config.workdir=runs/finetune
"""
import ml_collections

from configs import base


def get_config() -> ml_collections.ConfigDict:
  c = base.get_config()
  c.job = "align"
  c.workdir = "runs/semrepa"

  c.data = ml_collections.ConfigDict()
  c.data.records = ""              # annotation output: a records folder, file or glob
  c.data.batch_size = 2            # global; divided among processes
  c.data.seed = 0                  # shuffling
  c.data.text_embeds = False       # records carry cached T5 embeddings (annotate with a text encoder)
  c.data.prefetch = 4              # batches read ahead on host threads during a step (0: none)

  c.model = ml_collections.ConfigDict()
  c.model.backbone_preset = "cogvideox-5b-i2v"   # PRESETS of models/cogvideox/transformer.py
  # Field overrides of the preset (CogVideoXTransformerConfig names). Tiny: 2 layers, 2x16 heads.
  c.model.backbone = ml_collections.ConfigDict(dict(
      num_attention_heads=2, attention_head_dim=16, num_layers=2, in_channels=96, out_channels=48,
      text_embed_dim=32, time_embed_dim=32, sample_height=16, sample_width=24, sample_frames=9,
      use_learned_positional_embeddings=False))
  c.model.pretrained_transformer = ""   # converted weights (python -m conversion cogvideox-transformer)
  c.model.latent_channels = 48          # 16 for the CogVideoX VAE
  c.model.temporal_compression = 4      # VAE: 1 + 4k frames -> 1 + k latent frames
  c.model.structure_layers = 1          # depth of the Structure Alignment Module
  c.model.identity = ml_collections.ConfigDict(dict(
      use_depth=True, channels=(32, 64), blocks_per_stage=1, norm_groups=8, norm_eps=1e-6,
      embed_dim=32))                    # embed_dim = the teacher's width (ArcFace 512)

  c.diffusion = ml_collections.ConfigDict()
  c.diffusion.snr_shift_scale = 1.0     # 3.0 for CogVideoX-2b, 1.0 for 5b / 5b-I2V / 1.5
  c.diffusion.num_train_timesteps = 1000
  # What the backbone outputs: 'v_prediction' (CogVideoX; keep it when fine-tuning pretrained
  # weights) or 'sample' (x0; for a backbone trained from scratch whose width is below its patch
  # tokens' size, e.g. the demo's, see docs/demo.md). L_t is the v-MSE either way.
  c.diffusion.prediction_type = "v_prediction"

  c.align = ml_collections.ConfigDict()
  c.align.num_steps = 200
  c.align.structure_input = "clean"     # 'clean': SAM(z0) -> d0; 'noisy': SAM(z_t, t) -> d_t
  c.align.lambda_structure = 1.0        # the two modules train together; weights of their losses
  c.align.lambda_id = 1.0

  c.finetune = ml_collections.ConfigDict()
  c.finetune.num_steps = 200
  c.finetune.alignment_dir = ""         # <align workdir>/alignment_modules
  c.finetune.lambda_structure = 0.01    # lambda_S (paper)
  c.finetune.lambda_id = 1.0            # lambda_ID (paper)
  c.finetune.structure_input = "clean"  # 'clean': L_S(z0_hat) (paper's choice); 'noisy': L_S(z_{t-1})
  # Cap on L_t's per-timestep weight 1 / (1 - ab_t) of the x0 error; 0: none (the paper's v-MSE).
  c.finetune.max_diffusion_weight = 0.0
  c.finetune.image_dropout = 0.05       # CogVideoX I2V recipe
  c.finetune.text_dropout = 0.1

  c.optimizer.learning_rate = 1e-3
  c.optimizer.warmup_steps = 10
  c.checkpoint.every_steps = 100
  return c
