"""SemanticREPA on CogVideoX-2b (text-to-video backbone: no image latents on channels) at 49x480x720."""
from configs import semrepa_cogvideox_5b_i2v


def get_config():
  c = semrepa_cogvideox_5b_i2v.get_config()
  c.workdir = "runs/semrepa_2b"
  c.mesh.shape = (-1, 1, 1)            # 2b fits replicated: plain data parallel
  c.model.backbone_preset = "cogvideox-2b"
  c.model.structure_layers = 6
  c.diffusion.snr_shift_scale = 3.0
  return c
