"""The motion score of SemanticREPA (following PhysGen): FID between colorized optical flows.

For every video of each set, RAFT (models/metrics/raft.py; torchvision's raft_large weights
C_T_SKHT_V2, its default 12 flow updates) estimates the flow from each frame to the next, at the
frames' own size: a video of F frames gives F - 1 flows. Each flow becomes an RGB image by the
Middlebury colour wheel (eval/flow_color.py, normalized by its own largest norm), and the flow
images of all generated and of all reference videos are the two sets of an FID (eval/fid.py:
pool features of FID's InceptionV3, one Frechet distance). Lower is closer to the references'
motion. The frames go to RAFT as torchvision's Raft_Large_Weights transforms make them, uint8 /
127.5 - 1; the flow images go to the Inception as every FID frame does.
"""
import jax.numpy as jnp
import numpy as np

from sem_repa_jax.eval.flow_color import flow_to_image


def frame_pairs(video: np.ndarray, config, where: str) -> np.ndarray:
  """(F - 1, 2, H, W, 3): each frame with the next, checked against what RAFT `config` takes."""
  from sem_repa_jax.models.metrics.raft import check_frames
  if len(video) < 2:
    raise ValueError(f"{where}: {len(video)} frame(s); the motion score needs at least 2")
  check_frames((1,) + tuple(video.shape[1:]), config, where)
  return np.stack([video[:-1], video[1:]], 1)


def colorized_flow(raft, variables, pairs):
  """uint8 frame pairs (B, 2, H, W, 3) -> uint8 flow images (B, H, W, 3) (traceable)."""
  signed = pairs.astype(jnp.float32) / 127.5 - 1.0
  return flow_to_image(raft.apply(variables, signed[:, 0], signed[:, 1]))
