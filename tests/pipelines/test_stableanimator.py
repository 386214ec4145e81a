"""The StableAnimator pipeline against the official inference loop written in torch (porting-notes:
windows of frame 0 + tile - 1 frames with triangular weights, periodic initial noise, CFG whose
unconditional half has zero context, zero reference latents and no pose, per-frame guidance,
diffusers' Euler scheduler), on tiny random networks saved as users download them and converted
through the CLI: the official PoseNet / face encoder / adapter U-Net (.pth), a temporal VAE with
SVD's /8 compression and a CLIP vision encoder (save_pretrained)."""
import numpy as np
import pytest
import torch
from diffusers import EulerDiscreteScheduler, StableVideoDiffusionPipeline
from PIL import Image
from transformers import CLIPImageProcessor

import jax

from sem_repa_jax.diffusion import hjb
from sem_repa_jax.methods.stableanimator.model import load_stableanimator
from sem_repa_jax.models import load_pretrained
from sem_repa_jax.pipelines import stableanimator as sa
from sem_repa_jax.pipelines import windows
from tests import parity
from tests.diffusion.test_euler import SVD_SCHEDULER
from tests.stableanimator_models import ID_DIM, inference_models

SIDE, LATENT, STEPS = 64, 4, 3        # 64x64 frames, 8x8 latents (VAE and PoseNet both /8)
TOL = 1e-3


@pytest.fixture(scope="module")
def models(tmp_path_factory):
  root = tmp_path_factory.mktemp("stableanimator_pipeline")
  torch_nets = inference_models(root)
  model, variables = load_stableanimator(str(root / "unet"), str(root / "pose_net"),
                                         str(root / "face_encoder"))
  loaded = [x for name in ("vae", "image_encoder", "arcface")
            for x in load_pretrained(str(root / name))]
  return torch_nets, sa.StableAnimatorPipeline(model, variables, *loaded, progress=False)


def _inputs(frames, tile, seed=0):
  r = np.random.default_rng(seed)
  image = Image.fromarray(r.integers(0, 256, (48, 40, 3), dtype=np.uint8))
  poses = r.integers(0, 256, (frames, SIDE, SIDE, 3), dtype=np.uint8)
  id_embedding = r.standard_normal(ID_DIM).astype(np.float32)
  noise = r.standard_normal((1, min(tile, frames), SIDE // 8, SIDE // 8, LATENT)).astype(np.float32)
  image_noise = r.standard_normal((1, SIDE, SIDE, 3)).astype(np.float32)
  return image, poses, id_embedding, noise, image_noise


def _official(torch_models, image, poses, id_embedding, noise, image_noise, *, frames, tile,
              overlap, guidance):
  """InferenceAnimationPipeline.__call__ (official), with diffusers' SVD pipeline for the CLIP /
  VAE encoding and time ids; channels-last numpy in and out."""
  unet, pose_net, face_encoder, vae, clip = torch_models
  svd = StableVideoDiffusionPipeline(vae=vae, image_encoder=clip, unet=unet,
                                     scheduler=EulerDiscreteScheduler.from_config(SVD_SCHEDULER),
                                     feature_extractor=CLIPImageProcessor())
  t = lambda a: torch.from_numpy(np.ascontiguousarray(a))
  with torch.no_grad():
    emb = svd._encode_image(image, "cpu", 1, True)                          # [zeros, CLIP]
    face = face_encoder(t(id_embedding)[None], emb[1:])
    emb = torch.cat([torch.cat([emb[:1], torch.zeros_like(face)], 1),
                     torch.cat([emb[1:], face], 1)])
    pixels = svd.video_processor.preprocess(image, height=SIDE, width=SIDE)
    pixels = pixels + 0.02 * t(image_noise).permute(0, 3, 1, 2)
    reference = svd._encode_vae_image(pixels, "cpu", 1, True)
    reference = reference.unsqueeze(1).repeat(1, frames, 1, 1, 1)
    ids = svd._get_add_time_ids(6, 127, 0.02, emb.dtype, 1, 1, True)
    scheduler = svd.scheduler
    scheduler.set_timesteps(STEPS)
    latents = t(noise).permute(0, 1, 4, 2, 3) * scheduler.init_noise_sigma
    latents = latents.repeat(1, frames // tile + 1, 1, 1, 1)[:, :frames]
    scale = torch.linspace(guidance, guidance, frames)[None, :, None, None, None]
    indices = [[0, *range(i + 1, min(i + tile, frames))]
               for i in range(0, frames - tile + 1, tile - overlap)]
    if indices[-1][-1] < frames - 1:
      indices.append([0, *range(frames - tile + 1, frames)])
    pose = t(poses).float().div(127.5).sub(1).permute(0, 3, 1, 2)
    weight = (torch.arange(tile) + 0.5) * 2.0 / tile
    weight = torch.minimum(weight, 2 - weight)
    for step in scheduler.timesteps:
      x = scheduler.scale_model_input(torch.cat([latents] * 2), step)
      x = torch.cat([x, reference], dim=2)
      pred = torch.zeros_like(reference)
      count = torch.zeros(frames)
      for idx in indices:
        pose_latents = pose_net(pose[idx])
        out = unet(x[:1, idx], step, encoder_hidden_states=emb[:1], added_time_ids=ids[:1]).sample
        pred[:1, idx] += out * weight[:, None, None, None]
        hook = unet.conv_in.register_forward_hook(lambda m, i, o: o + pose_latents)
        out = unet(x[1:, idx], step, encoder_hidden_states=emb[1:], added_time_ids=ids[1:]).sample
        hook.remove()
        pred[1:, idx] += out * weight[:, None, None, None]
        count[idx] += weight
      pred = pred / count[:, None, None, None]
      uncond, cond = pred.chunk(2)
      latents = scheduler.step(uncond + scale * (cond - uncond), step, latents).prev_sample
  return latents.permute(0, 1, 3, 4, 2).numpy()


@pytest.mark.parametrize("frames,tile,overlap", [(7, 4, 1), (3, 4, 1)],
                         ids=["two_windows", "fewer_frames_than_a_window"])
def test_sampling_matches_the_official_loop(models, frames, tile, overlap):
  torch_nets, ours = models
  image, poses, id_embedding, noise, image_noise = _inputs(frames, tile)
  # Fewer frames than a window: the official crashes; its loop with a window of every frame
  # (tile = frames) is what ours computes.
  want = _official(torch_nets, image, poses, id_embedding, noise, image_noise, frames=frames,
                   tile=min(tile, frames), overlap=overlap, guidance=2.5)
  kw = dict(height=SIDE, width=SIDE, num_frames=frames, num_inference_steps=STEPS,
            min_guidance_scale=2.5, max_guidance_scale=2.5, tile_size=tile, tile_overlap=overlap)
  got = ours(image, poses, id_embedding, key=jax.random.key(0), latents=noise,
             image_noise=image_noise, decode=False, **kw)["latents"]
  err = parity.max_abs_error(got, want)
  print(f"StableAnimator pipeline, {frames} frames, tile {tile}: max abs error {err:.2e} "
        f"(max |latent| {np.abs(want).max():.2f})")
  assert err <= TOL
  # The comparison sees the poses: other skeletons give other latents.
  other = ours(image, 255 - poses, id_embedding, key=jax.random.key(0), latents=noise,
               image_noise=image_noise, decode=False, **kw)["latents"]
  assert parity.max_abs_error(other, want) > 10 * TOL


def test_window_tiling_is_the_official():
  np.testing.assert_array_equal(windows.window_indices(40, 16, 4),
                                [[0, *range(1, 16)], [0, *range(13, 28)], [0, *range(25, 40)]])
  np.testing.assert_array_equal(windows.window_indices(20, 16, 4), [[0, *range(1, 16)],
                                                                [0, *range(5, 20)]])
  np.testing.assert_array_equal(windows.window_indices(5, 16, 4), [range(5)])
  w = windows.window_weights(16)
  u = (np.arange(16) + 0.5) / 8
  np.testing.assert_allclose(w, np.minimum(u, 2 - u))
  np.testing.assert_allclose(w[0], 1 / 16)


def test_hjb_changes_the_faces_and_long_videos_run(models):
  """HJB on steps 0..1 of 2 with the official lr, 40 frames in 3 windows of 16: the refined run
  differs from the plain one only through the face step, and both are finite."""
  _, ours = models
  frames = 40
  image, poses, id_embedding, noise, image_noise = _inputs(frames, 16, seed=1)
  masks = np.zeros((frames, SIDE, SIDE), np.uint8)
  masks[:, 8:40, 16:48] = 255
  masks[7] = 0                                                  # a frame without a face
  ref_mask = np.zeros((48, 40), np.uint8)
  ref_mask[4:30, 6:34] = 255
  kw = dict(height=SIDE, width=SIDE, num_frames=frames, num_inference_steps=2, tile_size=16,
            tile_overlap=4, latents=noise, image_noise=image_noise, key=jax.random.key(0))
  plain = ours(image, poses, id_embedding, **kw)
  refined = ours(image, poses, id_embedding, face_masks=masks, reference_face_mask=ref_mask,
                 hjb=hjb.HJBConfig(first_step=0, last_step=1, iterations=2), **kw)
  for out in (plain, refined):
    assert out["video"].shape == (1, frames, SIDE, SIDE, 3)
    assert np.all(np.isfinite(np.asarray(out["video"])))
  assert parity.max_abs_error(refined["latents"], plain["latents"]) > 1e-3


def test_bad_inputs_are_one_line_errors(models):
  _, ours = models
  image, poses, id_embedding, noise, _ = _inputs(4, 16)
  kw = dict(height=SIDE, width=SIDE, num_frames=4, key=jax.random.key(0))
  with pytest.raises(ValueError, match=r"pose images of shape \(4, 64, 64, 3\): expected "
                                       r"\(F, 32, 64, 3\)"):
    ours(image, poses, id_embedding, **dict(kw, height=32))
  with pytest.raises(ValueError, match="3 pose images for num_frames=4"):
    ours(image, poses[:3], id_embedding, **kw)
  with pytest.raises(ValueError, match="needs face_masks"):
    ours(image, poses, id_embedding, hjb=hjb.HJBConfig(last_step=1), num_inference_steps=2, **kw)
  with pytest.raises(ValueError, match="hjb.last_step=20: the sampler has only 2 steps"):
    ours(image, poses, id_embedding, hjb=hjb.HJBConfig(), num_inference_steps=2, **kw)
  with pytest.raises(ValueError, match="tile_overlap=16"):
    ours(image, poses, id_embedding, tile_overlap=16, **kw)
