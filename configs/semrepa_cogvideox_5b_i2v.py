"""SemanticREPA on CogVideoX-5b-I2V at the paper's shapes (49 frames, 480x720; 13x60x90 latents).

Needs converted weights (python -m conversion cogvideox-transformer --src CogVideoX-5b-I2V/transformer
--dst ...) and records annotated with the CogVideoX VAE and T5 (configs/annotate.py with
annotate.encoder='vae'). The optimizer follows the paper: 8-bit Adam, and the CogVideoX recipe
(lr 1e-5, betas (0.9, 0.95), weight decay 1e-4, clip 0.1). Parameters are sharded over 'fsdp'.
"""
from configs import semrepa


def get_config():
  c = semrepa.get_config()
  c.workdir = "runs/semrepa_5b_i2v"
  c.mesh.shape = (1, -1, 1)            # fully sharded data parallel over every device
  c.dtype = "bfloat16"                 # compute; master weights stay float32
  c.remat_policy = "dots_no_batch"
  c.attention = "auto"                 # cuDNN flash attention on NVIDIA GPUs
  c.data.batch_size = 8
  c.data.text_embeds = True
  c.model.backbone_preset = "cogvideox-5b-i2v"
  c.model.backbone = {}
  c.model.latent_channels = 16
  c.model.structure_layers = 8         # "reduced depth": the paper does not give the number
  c.model.identity.channels = (128, 256, 512)
  c.model.identity.blocks_per_stage = 2
  c.model.identity.norm_groups = 32
  c.model.identity.embed_dim = 512
  c.diffusion.snr_shift_scale = 1.0
  c.align.num_steps = 10000
  c.finetune.num_steps = 10000
  c.optimizer.learning_rate = 1e-5
  c.optimizer.b2 = 0.95
  c.optimizer.weight_decay = 1e-4
  c.optimizer.grad_clip_norm = 0.1
  c.optimizer.moments_dtype = "int8"
  c.optimizer.warmup_steps = 100
  c.checkpoint.every_steps = 500
  return c
