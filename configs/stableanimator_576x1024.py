"""StableAnimator at the official 16 frames of 576x1024 (portrait), SVD-XT: about 70 GB a GPU in
the official training. Here parameters and moments are sharded over 'fsdp' (8 devices by
default), activations rematerialized, compute in bf16."""
from configs import stableanimator_512


def get_config():
  c = stableanimator_512.get_config()
  c.workdir = "runs/stableanimator_576x1024"
  c.mesh.shape = (-1, 8, 1)
  return c
