"""VividPose training at the tiny preset (SVD and SD U-Nets 32/64 wide, 3 frames of 64 x 48): what
the tests and a laptop CPU run. Records: configs/annotate_vividpose.py with its tiny defaults and
data.num_frames=3, and teachers whose CLIP width is 32 and ArcFace width 16 (the preset's)."""
from configs import vividpose


def get_config():
  c = vividpose.get_config()
  c.workdir = "runs/vividpose_tiny"
  c.model.preset = "tiny"
  c.data.batch_size = 2
  c.train.num_steps = 100
  c.dtype = "float32"
  c.remat_policy = "none"
  c.attention = "xla"
  c.mesh.shape = (-1, 1, 1)
  return c
