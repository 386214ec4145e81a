"""The stage-1 modules as judges of generated videos: the Structure Alignment Module reads depth
from a video's latents, the ID Alignment Module reads its identity.

- depth_rmse: SAM's depth latents decode to a colorized depth video; the inferno table inverted
  (eval/colorize.nearness) gives per-clip normalized nearness in [0, 1]; RMSE against the teacher's
  nearness over all frames.
- id_cosine: cosine between the IDM's embedding of a video (with SAM's depth) and the teacher
  identity pooled to latent frames, over latent frames with a visible face.
A judge ranks videos only as well as it reads the real clips: score the real clips' latents too.
"""
import os

import jax
import jax.numpy as jnp
import numpy as np

from sem_repa_jax.eval.colorize import nearness
from sem_repa_jax.eval.video_io import to_uint8
from sem_repa_jax.methods.semrepa.frames import pool_face_embeddings
from sem_repa_jax.models.pretrained import load_pretrained


class AlignmentJudges:
  """SAM and IDM of a stage-1 export (a load_pretrained folder), jitted."""

  def __init__(self, alignment_dir: str):
    if not os.path.isdir(alignment_dir):
      raise FileNotFoundError(f"{alignment_dir}: no stage-1 export (run job 'align' first)")
    module, v = load_pretrained(alignment_dir)
    self.depth = jax.jit(lambda z: module.apply(v, z, jnp.zeros((z.shape[0],), jnp.int32),
                                                method=module.predict_depth))
    self.identity = jax.jit(lambda z, d: module.apply(v, z, d, method=module.predict_identity))

  def scores(self, latents, decode, teacher_nearness, face_embeds, face_present,
             temporal_compression: int) -> tuple[dict, np.ndarray]:
    """({'depth_rmse', 'id_cosine'}, SAM's depth video as uint8) of a batch of video latents.

    decode: scaled latents -> video in [-1, 1]; teacher_nearness: (B, F, H, W) in [0, 1];
    face_embeds (B, F, D) and face_present (B, F): the teacher's per-frame identity."""
    z = jnp.asarray(latents)
    d_hat = self.depth(z)
    depth_u8 = to_uint8(decode(d_hat))
    out = {"depth_rmse": float(np.sqrt(np.mean((nearness(depth_u8) - teacher_nearness) ** 2)))}
    e = self.identity(z, d_hat)
    target, mask = pool_face_embeddings(face_embeds, face_present, temporal_compression)
    cos = jnp.sum(e * target, -1) / jnp.maximum(jnp.linalg.norm(e, axis=-1), 1e-6)
    m = np.asarray(mask, np.float32)
    out["id_cosine"] = float(np.sum(np.asarray(cos) * m) / max(m.sum(), 1.0))
    return out, depth_u8
