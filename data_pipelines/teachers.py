"""Latent teachers of the annotator: `encode_video` from a converted CogVideoX VAE
(`load_pretrained` folder) or the demo's lossless latent codec.

They follow the public model interface of docs/architecture.md: the VAE's
`apply(v, video (B,F,H,W,3), method='encode') -> (mean, logvar)` (the CogVideoX VAE's and the SVD
temporal VAE's alike). `encode_image` is the CLIP vision encoder's image embedding, preprocessed as
the SVD pipeline does. The ArcFace teacher is data_pipelines/faces.py's, on the face path the ID
metric shares.
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


def clip_image_encoder(model_dir: str):
  """encode_image(image (H,W,3) in [-1,1]) -> image_embeds (D,) of a converted CLIP vision encoder
  (load_pretrained folder), the image resized to its input size with diffusers' antialiased bicubic
  and CLIP-normalized (clip_preprocess, as pipelines/svd_i2v.py conditions on it)."""
  import jax
  from sem_repa_jax.models import load_pretrained
  from sem_repa_jax.models.encoders.clip_preprocess import preprocess_for_clip
  module, variables = load_pretrained(model_dir)
  size = module.config.image_size
  embed = jax.jit(lambda v, x: module.apply(v, preprocess_for_clip(x, size))["image_embeds"])

  def encode_image(image):
    return np.asarray(embed(variables, np.asarray(image, np.float32)[None])[0], np.float32)
  return encode_image
