"""StableAnimator at the official 16 frames of 512x512 on SVD-XT (about 40 GB a GPU in the
official PyTorch training; here bf16 compute with float32 masters and remat of every block).
Records: 16-frame clips annotated at 512x512 with the SVD VAE (64x64x4 latents)."""
from configs import stableanimator


def get_config():
  c = stableanimator.get_config()
  c.workdir = "runs/stableanimator_512"
  c.model.unet = type(c.model.unet)()   # the SVD-XT preset as it is
  c.data.batch_size = 8
  c.train.num_steps = 20000
  c.dtype = "bfloat16"
  c.param_dtype = "float32"
  c.remat_policy = "full"
  c.attention = "auto"
  # bf16 activations are sharded over data and fsdp (configs/base.py rules); moments in float32.
  c.mesh.shape = (-1, 1, 1)
  return c
