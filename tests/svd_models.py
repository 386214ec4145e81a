"""Tiny random Stable Video Diffusion models for the pipeline and job tests: diffusers' U-Net and
temporal VAE and transformers' CLIP vision encoder (224 px, as diffusers' _encode_image resizes
to), every weight redrawn, saved with save_pretrained and converted through the CLI into the
folders configs/sample_svd.py expects (unet/, vae/, image_encoder/)."""
import torch
from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from tests import parity
from tests.models.test_svd_unet import TINY as TINY_UNET

LATENT_CHANNELS = 4
TINY_VAE = dict(block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
                layers_per_block=1, latent_channels=LATENT_CHANNELS, sample_size=32)
# SVD's /8 compression, for models whose pose inputs are 8x the latents (PoseNet, VividPose).
TINY_VAE_8X = dict(block_out_channels=(32,) * 4, down_block_types=("DownEncoderBlock2D",) * 4,
                   layers_per_block=1, latent_channels=LATENT_CHANNELS, sample_size=64)
TINY_CLIP = dict(hidden_size=16, intermediate_size=24, num_hidden_layers=1, num_attention_heads=2,
                 patch_size=32, image_size=224, projection_dim=TINY_UNET["cross_attention_dim"],
                 hidden_act="gelu", layer_norm_eps=1e-5)
# (folder under the model root, conversion kind)
FOLDERS = (("unet", "svd-unet"), ("vae", "svd-vae"), ("image_encoder", "clip-vision"))


def tiny_svd_models():
  """(unet, vae, image_encoder): the torch modules, eval mode, weights redrawn."""
  torch.manual_seed(0)
  unet = parity.randomize(UNetSpatioTemporalConditionModel(**TINY_UNET).eval(), seed=0)
  vae = parity.randomize(AutoencoderKLTemporalDecoder(**TINY_VAE).eval(), seed=1, spread=0.3)
  clip = parity.randomize(CLIPVisionModelWithProjection(CLIPVisionConfig(**TINY_CLIP)).eval(),
                          norms_only=True, spread=0.5)
  return unet, vae, clip


def tiny_vae_8x():
  """A random temporal VAE with SVD's /8 compression (TINY_VAE_8X), eval mode."""
  torch.manual_seed(0)
  return parity.randomize(AutoencoderKLTemporalDecoder(**TINY_VAE_8X).eval(), seed=1, spread=0.3)


def convert_tiny_svd(root):
  """tiny_svd_models() saved under ROOT/src_<name> and converted into ROOT/<name>; returns them."""
  models = tiny_svd_models()
  for (name, kind), model in zip(FOLDERS, models):
    parity.convert_pretrained(model, kind, root / f"src_{name}", root / name)
  return models
