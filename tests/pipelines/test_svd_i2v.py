"""Full image-to-video parity with diffusers' StableVideoDiffusionPipeline: a tiny random SVD U-Net,
temporal VAE and CLIP vision encoder (224 px, as diffusers' _encode_image resizes to), saved with
save_pretrained, converted through the CLI, sampled by both pipelines from the same initial noise
and image-noise augmentation, per-frame guidance on (1 -> 3), SVD's Euler scheduler config.

The image is 24 x 36: the CLIP branch resizes it (antialiased bicubic) and the VAE branch (PIL
Lanczos) to 16 x 24, so both resizes are compared too.
"""
import jax
import numpy as np
import pytest
import torch
from diffusers import EulerDiscreteScheduler, StableVideoDiffusionPipeline
from PIL import Image
from transformers import CLIPImageProcessor

from sem_repa_jax.models import load_pretrained
from sem_repa_jax.pipelines import svd_i2v
from tests import parity
from tests.diffusion.test_euler import SVD_SCHEDULER
from tests.svd_models import FOLDERS, LATENT_CHANNELS as C, convert_tiny_svd

H, W, FRAMES, STEPS = 16, 24, 3, 4
TOL = 1e-3


@pytest.fixture(scope="module")
def models(tmp_path_factory):
  root = tmp_path_factory.mktemp("svd_i2v")
  unet, vae, clip = convert_tiny_svd(root)
  loaded = [x for name, _ in FOLDERS for x in load_pretrained(str(root / name))]
  ours = svd_i2v.SVDImageToVideo(*loaded, progress=False)
  ref = StableVideoDiffusionPipeline(vae=vae, image_encoder=clip, unet=unet,
                                     scheduler=EulerDiscreteScheduler.from_config(SVD_SCHEDULER),
                                     feature_extractor=CLIPImageProcessor())
  ref.set_progress_bar_config(disable=True)
  return ours, ref


def _inputs(seed=0, batch=1):
  r = np.random.default_rng(seed)
  images = [Image.fromarray(r.integers(0, 256, (24, 36, 3), dtype=np.uint8)) for _ in range(batch)]
  noise = r.standard_normal((batch, FRAMES, H // 2, W // 2, C)).astype(np.float32)
  # diffusers' first draw from the generator is the image noise (B, 3, H, W).
  image_noise = torch.randn((batch, 3, H, W), generator=torch.Generator().manual_seed(seed))
  return images if batch > 1 else images[0], noise, image_noise


def test_final_latents_and_decode_match_diffusers(models):
  ours, ref = models
  image, noise, image_noise = _inputs(batch=2)   # two videos: the [uncond, cond] halves of 4
  kw = dict(height=H, width=W, num_frames=FRAMES, num_inference_steps=STEPS,
            min_guidance_scale=1.0, max_guidance_scale=3.0, fps=7, motion_bucket_id=127,
            noise_aug_strength=0.02)
  with torch.no_grad():
    want = ref(image, latents=torch.from_numpy(noise).permute(0, 1, 4, 2, 3), output_type="latent",
               generator=torch.Generator().manual_seed(0), **kw).frames
  want = want.permute(0, 1, 3, 4, 2).numpy()
  got = ours(image, key=jax.random.key(0), latents=noise,
             image_noise=image_noise.permute(0, 2, 3, 1).numpy(), decode=False, **kw)["latents"]
  err = parity.max_abs_error(got, want)
  scale = float(np.abs(want).max())
  print(f"SVD pipeline final latents: max abs error {err:.2e} (max |latent| {scale:.2f})")
  assert err <= TOL, err
  # The comparison sees the augmentation noise: without it the latents are far off.
  other = ours(image, key=jax.random.key(0), latents=noise, image_noise=np.zeros((2, H, W, 3)),
               decode=False, **kw)["latents"]
  assert parity.max_abs_error(other, want) > 100 * TOL

  # Decode at a chunk size that does not divide the frames (a chunk spans both videos).
  with torch.no_grad():
    video_ref = ref.decode_latents(torch.from_numpy(want).permute(0, 1, 4, 2, 3), FRAMES, 2)
  video = np.asarray(ours.decode(want, decode_chunk_size=2))
  err_dec = parity.max_abs_error(video, video_ref.permute(0, 2, 3, 4, 1).numpy())
  print(f"SVD pipeline decode (chunk 2): max abs error {err_dec:.2e}")
  assert video.shape == (2, FRAMES, H, W, 3)
  assert err_dec <= 1e-4, err_dec


def test_guidance_off_and_errors(models):
  ours, _ = models
  image, noise, _ = _inputs(1)
  kw = dict(height=H, width=W, num_frames=FRAMES, num_inference_steps=2, latents=noise)
  a = ours(image, key=jax.random.key(0), max_guidance_scale=1.0, decode=False, **kw)["latents"]
  b = ours(image, key=jax.random.key(0), max_guidance_scale=1.0, decode=False, **kw)["latents"]
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))   # deterministic given the key
  c = ours(image, key=jax.random.key(1), max_guidance_scale=1.0, decode=False, **kw)["latents"]
  assert not np.allclose(np.asarray(a), np.asarray(c))          # the key draws the image noise
  with pytest.raises(ValueError, match="latents of shape"):
    ours(image, key=jax.random.key(0), **dict(kw, latents=noise[:, :2]))
  with pytest.raises(ValueError, match="multiples"):
    ours(image, key=jax.random.key(0), **dict(kw, height=H + 1))
