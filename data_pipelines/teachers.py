"""Latent teachers of the annotator: `encode_video` from a converted CogVideoX VAE
(`load_pretrained` folder) or the demo's lossless latent codec.

They follow the public model interface of docs/architecture.md: the VAE's
`apply(v, video (B,F,H,W,3), method='encode') -> (mean, logvar)`. The ArcFace teacher is
data_pipelines/faces.py's, on the face path the ID metric shares.
"""
import numpy as np


def vae_encoder(model_dir: str, scaling_factor: float):
  """encode_video(video (F,H,W,3) in [-1,1]) -> scaling_factor * posterior mean (f,h,w,c).

  The mean (mode) is cached, not a sample, so records do not depend on a sampling seed.
  """
  import jax
  from sem_repa_jax.models import load_pretrained
  module, variables = load_pretrained(model_dir)
  encode = jax.jit(lambda v, x: module.apply(v, x, method="encode")[0])

  def encode_video(video):
    mean = encode(variables, np.asarray(video, np.float32)[None])
    return np.asarray(mean[0], np.float32) * scaling_factor
  return encode_video


def codec_encoder(spatial_factor: int = 2, temporal_factor: int = 4):
  """encode_video with the demo's lossless LatentCodec (sem_repa_jax/models/latent_codec.py),
  scaled by its scaling factor like the VAE's latents."""
  import jax
  from sem_repa_jax.models.latent_codec import LatentCodec
  codec = LatentCodec(spatial_factor=spatial_factor, temporal_factor=temporal_factor)
  encode = jax.jit(lambda x: codec.apply({}, x, method="encode")[0])

  def encode_video(video):
    return np.asarray(encode(np.asarray(video, np.float32)[None])[0]) * codec.scaling_factor
  return encode_video
