"""The optimizer's config fields and defaults, without jax: configs/base.py reads them at parse time."""
import ml_collections


def default_config() -> ml_collections.ConfigDict:
  """The fields `make_optimizer` reads from `config.optimizer` (missing ones take these values)."""
  c = ml_collections.ConfigDict()
  c.learning_rate = 1e-4
  c.schedule = "constant"        # 'constant' | 'warmup_cosine'
  c.warmup_steps = 0             # linear warm-up from 0 (both schedules)
  c.decay_steps = 0              # cosine: total steps including warm-up
  c.end_lr_ratio = 0.0           # cosine: final lr = learning_rate * end_lr_ratio
  c.b1 = 0.9
  c.b2 = 0.999
  c.eps = 1e-8
  c.weight_decay = 1e-2          # decoupled (AdamW), on every trained parameter as torch AdamW
  c.grad_clip_norm = 1.0         # global-norm clipping; 0 disables
  c.moments_dtype = "float32"    # 'float32' | 'int8' (block-wise dynamic quantization)
  c.block_size = 2048
  c.min_quantized_size = 4096
  c.ema_decay = 0.0              # > 0 keeps an exponential moving average of the params
  return c
