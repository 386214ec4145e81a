"""A fixed linear video codec with the CogVideoX VAE's latent geometry, for demos and tests.

Frames 1 + 4k -> latent frames 1 + k (the first frame alone, then groups of 4), pixels x8 down in
space, 16 channels: each latent vector is a fixed random projection (seeded) of the averaged
pixels of its patch. It stands in for the VAE where no weights exist; `encode_video` callables of
the annotator accept either.
"""
import numpy as np


class PatchCodec:

  def __init__(self, channels: int = 16, spatial: int = 8, temporal: int = 4, seed: int = 0):
    self.channels, self.spatial, self.temporal = channels, spatial, temporal
    d = 3 * spatial * spatial
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
    self.proj = (q[:, :channels] * np.sqrt(d / channels)).astype(np.float32)

  def latent_frames(self, num_frames: int) -> int:
    return 1 + (num_frames - 1) // self.temporal

  def encode_video(self, video: np.ndarray) -> np.ndarray:
    """(F, H, W, 3) in [-1, 1] -> (1 + (F-1)//4, H/8, W/8, channels) float32."""
    v = np.asarray(video, np.float32)
    f, h, w, _ = v.shape
    s, t = self.spatial, self.temporal
    if h % s or w % s or (f - 1) % t:
      raise ValueError(f"PatchCodec: video shape {v.shape} needs H, W divisible by {s} and "
                       f"F = 1 + {t}k")
    groups = [v[:1]] + [v[1 + i * t:1 + (i + 1) * t].mean(0, keepdims=True)
                        for i in range((f - 1) // t)]
    g = np.concatenate(groups)
    patches = g.reshape(len(g), h // s, s, w // s, s, 3).transpose(0, 1, 3, 2, 4, 5)
    return patches.reshape(len(g), h // s, w // s, -1) @ self.proj
