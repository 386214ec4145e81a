"""How video frames map to latent frames, and how per-frame teacher embeddings are pooled to them.

The CogVideoX VAE compresses time by 4 with the first frame alone: 1 + 4k video frames give 1 + k
latent frames; latent frame 0 covers video frame 0 and latent frame j > 0 covers video frames
4j-3 .. 4j. A latent frame's teacher embedding is the mean of the L2-normalized embeddings of its
video frames that have a face, renormalized; a latent frame with no face in any of its video frames
is absent (masked out of the ID loss, never zero-filled).
"""
import jax.numpy as jnp
import numpy as np


def latent_frame_groups(num_video_frames: int, temporal_compression: int = 4) -> list[list[int]]:
  """[[0], [1..4], [5..8], ...] for 1 + 4k frames; raises on other counts."""
  t = temporal_compression
  if num_video_frames < 1 or (num_video_frames - 1) % t:
    raise ValueError(f"{num_video_frames} video frames: expected 1 + {t}k frames "
                     f"(e.g. 9, 13, 49) to match the VAE's temporal compression of {t}")
  return [[0]] + [list(range(1 + t * j, 1 + t * (j + 1))) for j in range((num_video_frames - 1) // t)]


def pool_face_embeddings(embeds, present, temporal_compression: int = 4):
  """(B,F,D) per-frame embeddings + (B,F) face-present mask -> (B,f,D) unit embeddings, (B,f) mask."""
  embeds = jnp.asarray(embeds, jnp.float32)
  present = jnp.asarray(present, jnp.bool_)
  groups = latent_frame_groups(embeds.shape[1], temporal_compression)
  width = max(len(g) for g in groups)
  # A (f, width) index table padded with -1, so the pooling is one gather and one masked mean.
  table = np.full((len(groups), width), -1, np.int32)
  for j, g in enumerate(groups):
    table[j, :len(g)] = g
  valid = jnp.asarray(table >= 0)
  idx = jnp.asarray(np.maximum(table, 0))
  unit = embeds / jnp.maximum(jnp.linalg.norm(embeds, axis=-1, keepdims=True), 1e-6)
  w = (present[:, idx] & valid[None]).astype(jnp.float32)          # (B, f, width)
  pooled = jnp.einsum("bfk,bfkd->bfd", w, unit[:, idx])
  mask = w.sum(-1) > 0
  pooled = pooled / jnp.maximum(jnp.linalg.norm(pooled, axis=-1, keepdims=True), 1e-6)
  return jnp.where(mask[..., None], pooled, 0.0), mask
