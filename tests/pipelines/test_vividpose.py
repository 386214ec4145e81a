"""The VividPose pipeline (pipelines/vividpose.py) on the tiny preset with random networks (tests/
vividpose_models.py): without guidance it is an EDM Euler loop written here around
VividPose.apply (diffusers' Euler sigmas, the v-parameterization by hand); the ReferenceNet runs
once per sample, outside the sampling program; with new controllers, no ID embedding and no
ReferenceNet it is the plain SVD pipeline (pipelines/svd_i2v.py) with the same noise; bad inputs
are one-line errors."""
import types

import jax
import numpy as np
import pytest
from diffusers import EulerDiscreteScheduler
from PIL import Image

from sem_repa_jax.methods.vividpose.reference import reference_net_features
from sem_repa_jax.models import load_pretrained
from sem_repa_jax.pipelines import svd_i2v
from sem_repa_jax.pipelines import vividpose as vp
from tests.diffusion.test_euler import SVD_SCHEDULER
from tests.methods.test_vividpose import _moved, _plain_unet
from tests.vividpose_models import CFG, ID_DIM, convert_vae_and_clip, initial_variables

F, H, W, STEPS = CFG.num_frames, CFG.height, CFG.width, 3
SIZE = dict(height=H, width=W, num_frames=F, num_inference_steps=STEPS)


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
  root = tmp_path_factory.mktemp("vividpose_pipeline")
  model, variables, reference_net, reference_vars = initial_variables()
  convert_vae_and_clip(root)
  vae, clip = (load_pretrained(str(root / name)) for name in ("vae", "image_encoder"))
  return types.SimpleNamespace(model=model, new=variables, live=_moved(variables),
                               reference=(reference_net, reference_vars), vae=vae, clip=clip)


def _inputs(seed=0, tile=F):
  r = np.random.default_rng(seed)
  return dict(image=Image.fromarray(r.integers(0, 256, (40, 36, 3), dtype=np.uint8)),
              skeletons=r.integers(0, 256, (F, H, W, 3), dtype=np.uint8),
              dense_maps=r.integers(0, 256, (F, H, W, 3), dtype=np.uint8),
              id_embedding=r.standard_normal(ID_DIM).astype(np.float32),
              latents=r.standard_normal((1, tile, H // 8, W // 8, 4)).astype(np.float32),
              image_noise=r.standard_normal((1, H, W, 3)).astype(np.float32))


def _pipeline(nets, variables, reference=True):
  return vp.VividPosePipeline(nets.model, variables, *(nets.reference if reference else (None,
                              None)), *nets.vae, *nets.clip, progress=False)


def _hand_written_loop(nets, inp):
  """Euler over diffusers' sigmas, x0 = x / (s^2 + 1) - s / sqrt(s^2 + 1) F, VividPose.apply
  with the ReferenceNet's features of the scaled, noise-augmented reference latent (the training
  records' reference_latents) at t = 0 and the CLIP context."""
  model, (vae, vae_vars), (clip, clip_vars) = nets.model, nets.vae, nets.clip
  clip_image, pixels = svd_i2v.prepared_images(inp["image"], vp.VividPoseSettings(**SIZE))
  embeds = svd_i2v.image_embeddings(clip, clip_vars, clip_image)
  mean, _ = vae.apply(vae_vars, (pixels + 0.02 * inp["image_noise"])[:, None], method="encode")
  image_latents = np.repeat(np.asarray(mean), F, axis=1)
  features = reference_net_features(*nets.reference, mean[:, 0] * vae.config.scaling_factor,
                                    embeds)
  maps = {k: inp[k][None].astype(np.float32) / 127.5 - 1 for k in ("skeletons", "dense_maps")}
  net = jax.jit(lambda x, t: model.apply(
      nets.live, x, t, embeds, np.array([[6.0, 127.0, 0.02]], np.float32),
      reference_features=features, id_embedding=inp["id_embedding"][None],
      dense_maps=maps["dense_maps"], skeleton_maps=maps["skeletons"]))
  scheduler = EulerDiscreteScheduler.from_config(SVD_SCHEDULER)
  scheduler.set_timesteps(STEPS)
  sigmas = scheduler.sigmas.numpy().astype(np.float64)
  x = inp["latents"].astype(np.float64) * float(scheduler.init_noise_sigma)
  for s, s_next in zip(sigmas[:-1], sigmas[1:]):
    x_in = np.concatenate([x / np.sqrt(s * s + 1), image_latents], -1).astype(np.float32)
    out = np.asarray(net(x_in, np.full((1,), 0.25 * np.log(s), np.float32)), np.float64)
    x0 = x / (s * s + 1) - s / np.sqrt(s * s + 1) * out
    x = x0 + (x - x0) * (s_next / s)
  return x


def test_without_guidance_equals_a_hand_written_edm_loop(nets):
  inp = _inputs()
  want = _hand_written_loop(nets, inp)
  pipe = _pipeline(nets, nets.live)
  got = np.asarray(pipe(
      **inp, key=jax.random.key(0), decode=False, min_guidance_scale=1.0,
      max_guidance_scale=1.0, **SIZE)["latents"])
  err = np.abs(got - want).max()
  print(f"VividPose pipeline vs the hand-written loop: max abs {err:.1e} (max |latent| "
        f"{np.abs(want).max():.2f})")
  assert err <= 1e-5 * max(1.0, np.abs(want).max())
  # The comparison sees every condition: other skeletons, dense maps or identity move it.
  for k, other in (("skeletons", 255 - inp["skeletons"]), ("dense_maps", 255 - inp["dense_maps"]),
                   ("id_embedding", -inp["id_embedding"])):
    moved = pipe(**dict(inp, **{k: other}), key=jax.random.key(0), decode=False,
                 min_guidance_scale=1.0, max_guidance_scale=1.0, **SIZE)["latents"]
    assert np.abs(np.asarray(moved) - want).max() > 100 * err, k


def test_reference_net_runs_once_per_sample_outside_the_loop(nets, monkeypatch):
  calls = []

  def counted(net, variables, latent, context, *a, **kw):
    calls.append((latent.shape, context.shape))
    return reference_net_features(net, variables, latent, context, *a, **kw)
  monkeypatch.setattr(vp, "reference_net_features", counted)
  pipe = _pipeline(nets, nets.live)
  inp = _inputs(tile=2)
  kw = dict(SIZE, tile_size=2, tile_overlap=0, max_guidance_scale=2.0)     # 2 windows, CFG
  assert len(vp.VividPoseSettings(**kw).windows()) == 2
  pipe(**inp, key=jax.random.key(0), decode=False, **kw)
  # Another step count recompiles the sampling program, not the conditioning: no new call.
  pipe(**inp, key=jax.random.key(0), decode=False, **dict(kw, num_inference_steps=2))
  d = CFG.unet.cross_attention_dim[0]
  assert calls == [((1, H // 8, W // 8, 4), (1, 1, d))]   # one call; both CFG halves share it


def test_new_controllers_without_reference_or_id_equal_the_svd_pipeline(nets):
  inp = _inputs(1)
  inp.pop("id_embedding")
  kw = dict(SIZE, min_guidance_scale=1.0, max_guidance_scale=2.5, decode_chunk_size=2)
  got = _pipeline(nets, nets.new, reference=False)(**inp, key=jax.random.key(0), **kw)
  plain, strip = _plain_unet()
  svd = svd_i2v.SVDImageToVideo(plain, {"params": strip(nets.new["params"]["unet"])}, *nets.vae,
                                *nets.clip, progress=False)
  want = svd(inp["image"], key=jax.random.key(0), latents=inp["latents"],
             image_noise=inp["image_noise"], **kw)
  err = {k: float(np.abs(np.asarray(got[k]) - np.asarray(want[k])).max())
         for k in ("latents", "video")}
  print(f"VividPose (new controllers, no ReferenceNet, no ID) vs the SVD pipeline: max abs {err} "
        f"(max |latent| {np.abs(np.asarray(want['latents'])).max():.2f})")
  assert err["latents"] <= 1e-5 and err["video"] <= 1e-5


def test_errors_name_the_input(nets):
  pipe = _pipeline(nets, nets.live)
  inp = _inputs()
  bad = (({"dense_maps": inp["dense_maps"][:2]}, "2 dense_maps for num_frames=3"),
         ({"skeletons": inp["skeletons"][:, :32]}, r"skeletons of shape \(3, 32, 48, 3\)"),
         ({"id_embedding": np.zeros(7)}, "id_embedding of 7 values: expected 16"),
         ({"latents": inp["latents"][:, :1]}, "latents of shape"))
  for change, message in bad:
    with pytest.raises(ValueError, match=message):
      pipe(**dict(inp, **change), key=jax.random.key(0), **SIZE)
