"""HJB face optimization on the CogVideoX image-to-video sampler (our extension): the face step
of diffusion/hjb.py through the sampler hook, decoding x0 with the pipeline's own VAE. With the
stand-in models of test_cogvideox_i2v_logic and a small random IResNet: faces in the masks move
the latents, frames without a face leave them exactly as without HJB, and bad inputs are errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sem_repa_jax.diffusion.hjb import HJBConfig
from sem_repa_jax.models.encoders.arcface import IResNet, IResNetConfig
from sem_repa_jax.pipelines import cogvideox_i2v as i2v
from tests.pipelines.test_cogvideox_i2v_logic import (C, FRAMES, H, SF, W, FlaxTransformer,
                                                      FlaxVAE, _inputs)


@pytest.fixture(scope="module")
def pipe():
  vae, tr = FlaxVAE(), FlaxTransformer()
  vv = vae.init(jax.random.key(0), jnp.zeros((1, 1, H, W, 3)))
  tv = tr.init(jax.random.key(0), jnp.zeros((1, 3, H // 8, W // 8, 2 * C)), jnp.zeros((1, 6, 8)),
               jnp.zeros((1,), jnp.int32))
  face = IResNet(IResNetConfig(layers=(1, 1, 1, 1), widths=(8, 16, 16, 32), num_features=16))
  fv = face.init(jax.random.key(1), jnp.zeros((1, 112, 112, 3)))
  return i2v.CogVideoXImageToVideo(tr, tv, vae, vv, progress=False, face_embedder=face,
                                   face_embedder_variables=fv,
                                   facts=i2v.ModelFacts(latent_channels=C, vae_scaling_factor=SF))


def _masks(face: bool):
  masks = np.zeros((FRAMES, H, W), np.uint8)
  if face:
    masks[:, 4:20, 10:30] = 255
  ref = np.zeros((40, 56), np.uint8)
  ref[5:25, 10:40] = 255
  return masks, ref


def test_faces_move_the_latents_and_faceless_frames_change_nothing(pipe):
  image, pos, neg, latents, noise = _inputs(2)
  base = dict(height=H, width=W, num_frames=FRAMES, num_inference_steps=3, guidance_scale=6.0)
  run = lambda settings, **kw: np.asarray(pipe(image, pos, neg, key=jax.random.key(0),
                                               settings=settings, latents=latents,
                                               image_noise=noise, decode=False, **kw)["latents"])
  plain = run(i2v.SamplingSettings(**base))
  hjb = i2v.SamplingSettings(**base, hjb=HJBConfig(first_step=0, last_step=1, iterations=2,
                                                   learning_rate=0.1))
  masks, ref = _masks(face=True)
  refined = run(hjb, face_masks=masks, reference_face_mask=ref)
  assert np.all(np.isfinite(refined))
  assert np.abs(refined - plain).max() > 1e-3
  masks, ref = _masks(face=False)
  untouched = run(hjb, face_masks=masks, reference_face_mask=ref)
  np.testing.assert_array_equal(untouched, plain)


def test_hjb_inputs_are_checked(pipe):
  image, pos, neg, _, _ = _inputs(3)
  s = i2v.SamplingSettings(height=H, width=W, num_frames=FRAMES, num_inference_steps=2,
                           hjb=HJBConfig(last_step=1))
  masks, ref = _masks(face=True)
  with pytest.raises(ValueError, match="HJB needs face_masks"):
    pipe(image, pos, neg, key=jax.random.key(0), settings=s)
  with pytest.raises(ValueError,
                     match=r"face_masks of shape \(8, 32, 48\): expected \(9, 32, 48\)"):
    pipe(image, pos, neg, key=jax.random.key(0), settings=s, face_masks=masks[:8],
         reference_face_mask=ref)
  with pytest.raises(ValueError, match="HJB takes one image per call"):
    pipe([image, image], np.concatenate([pos, pos]), np.concatenate([neg, neg]),
         key=jax.random.key(0), settings=s, face_masks=masks, reference_face_mask=ref)
  with pytest.raises(ValueError, match="hjb.last_step=20: the sampler has only 2 steps"):
    pipe(image, pos, neg, key=jax.random.key(0),
         settings=i2v.SamplingSettings(height=H, width=W, num_frames=FRAMES,
                                       num_inference_steps=2, hjb=HJBConfig()))
