"""HJB face optimization (diffusion/hjb.py) against the official inner loop written in torch
(benchmarks/hjb.py torch_hjb_loop; porting-notes.md: torch Adam on a copy of x0, every frame
decoded by chunks through the temporal VAE, clamp to [-1, 1], crop by the mask box, F.interpolate
to 112 bilinear, IResNet, mean |1 - cos|), with a tiny diffusers VAE and a tiny IResNet converted
as users' files are."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import jax
import jax.numpy as jnp

from benchmarks.hjb import torch_hjb_loop
from sem_repa_jax.diffusion import hjb
from sem_repa_jax.models import load_pretrained
from sem_repa_jax.models.svd.vae import TemporalVAE
from tests import parity
from tests.models.test_arcface import FEATURES, LAYERS, WIDTHS, TorchIResNet
from tests.models.test_svd_vae import LATENT, _reference as tiny_vae

FRAMES, SIDE, CHUNK, SCALING = 5, 16, 2, 0.18215    # latents (5, 16, 16, 4) -> frames 32x32
FACE = 112


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
  root = tmp_path_factory.mktemp("hjb")
  vae = parity.randomize(tiny_vae(), seed=1, spread=0.3)
  _, vae_dir = parity.round_trip(vae, "svd-vae", root / "vae")
  torch.manual_seed(0)
  arcface = parity.randomize(TorchIResNet(LAYERS, WIDTHS, FEATURES, FACE), spread=0.1,
                             gain=0.5 ** 0.5).eval()
  torch.save(arcface.state_dict(), root / "backbone.pth")
  arcface_dir = parity.convert("arcface", root / "backbone.pth", root / "arcface")
  vae_module, vae_vars = load_pretrained(vae_dir)
  face_module, face_vars = load_pretrained(arcface_dir)
  decode = lambda z: vae_module.apply(vae_vars, z[None] / SCALING, CHUNK,
                                      method=TemporalVAE.decode)[0]
  embed = lambda faces: face_module.apply(face_vars, faces)
  return (vae, arcface), (decode, embed)


def _case(seed=0):
  rng = np.random.default_rng(seed)
  x0 = (0.5 * rng.standard_normal((FRAMES, SIDE, SIDE, LATENT))).astype(np.float32)
  masks = np.zeros((FRAMES, 2 * SIDE, 2 * SIDE), np.uint8)
  for k in range(FRAMES):                              # a different rectangle on every frame
    y, x = rng.integers(0, 12, 2)
    masks[k, y:y + 10 + k, x:x + 14 - k] = 255
  return x0, masks


def _reference_embedding(nets, seed=7):
  face = np.random.default_rng(seed).uniform(-1, 1, (1, 3, FACE, FACE)).astype(np.float32)
  with torch.no_grad():
    return nets[1](torch.from_numpy(face))[0].numpy()


@pytest.mark.parametrize("eps", [1e-8, 1e-6], ids=["official_eps", "eps_1e-6"])
def test_face_step_equals_the_official_torch_loop(nets, eps):
  """Losses of the 3 iterations to 1e-4 at torch's eps 1e-8 and 99 % of z to 1e-4 (elements
  with |g| ~ eps are ill-conditioned in Adam: 25 of 5120 differ by 1e-4 to 5e-4 = 1 % of lr);
  with eps 1e-6 every element of z to 1e-4."""
  torch_nets, (decode, embed) = nets
  x0, masks = _case()
  e_ref = _reference_embedding(torch_nets)
  boxes, has_face = hjb.mask_boxes(masks)
  want_z, want_losses = torch_hjb_loop(*torch_nets, x0, boxes, e_ref, lr=0.05, iterations=3,
                                       chunk=CHUNK, face_size=FACE, eps=eps, scaling=SCALING)
  assert has_face.all()
  step = jax.jit(lambda z, lr: hjb.hjb_face_step(
      z, lr, decode=decode, embed=embed, boxes=boxes, has_face=has_face,
      reference_embedding=e_ref, iterations=3, face_size=FACE, adam_eps=eps))
  z, losses = step(jnp.asarray(x0), 0.05)
  np.testing.assert_allclose(np.asarray(losses), want_losses, rtol=1e-4, atol=1e-6)
  moved = np.abs(want_z - x0).max()
  assert moved > 0.05                                  # Adam's steps of ~lr: the loop did move z
  err = np.abs(np.asarray(z) - want_z)
  print(f"HJB 3 iterations, eps {eps:g}: max |z - z_torch| {err.max():.2e}, 99 % "
        f"{np.quantile(err, 0.99):.2e} (z moved {moved:.3f})")
  if eps >= 1e-6:
    assert err.max() <= 1e-4
  else:
    assert np.quantile(err, 0.99) <= 1e-4 and err.max() <= 1e-3


@pytest.mark.parametrize("box", [(3, 150, 10, 140), (20, 60, 5, 90), (0, 159, 0, 159),
                                 (7, 7, 9, 30)])
def test_crop_and_resize_is_torch_bilinear_on_the_crop(box):
  image = np.random.default_rng(0).standard_normal((160, 160, 3)).astype(np.float32)
  y0, y1, x0, x1 = box
  crop = torch.from_numpy(image).permute(2, 0, 1)[None, :, y0:y1 + 1, x0:x1 + 1]
  want = F.interpolate(crop, size=(FACE, FACE), mode="bilinear", align_corners=False)
  got = jax.jit(hjb.crop_and_resize, static_argnums=2)(jnp.asarray(image), jnp.asarray(box), FACE)
  # torch rounds its float32 source coordinates by up to ~1e-5 px (hjb._source_taps is exact): at
  # pixel steps of up to ~6 here that is up to ~6e-5.
  np.testing.assert_allclose(np.asarray(got), want[0].permute(1, 2, 0).numpy(), atol=1e-4)


def test_mask_boxes_and_a_frame_without_a_face_leaves_the_loss(nets):
  _, (decode, embed) = nets
  x0, masks = _case()
  masks[2] = 0
  boxes, has_face = hjb.mask_boxes(masks)
  assert has_face.tolist() == [True, True, False, True, True]
  ys, xs = np.nonzero(masks[1])
  assert boxes[1].tolist() == [ys.min(), ys.max(), xs.min(), xs.max()]
  assert boxes[2].tolist() == [0, 2 * SIDE - 1, 0, 2 * SIDE - 1]
  e_ref = np.random.default_rng(3).standard_normal(FEATURES).astype(np.float32)
  frames = jnp.clip(decode(jnp.asarray(x0)), -1, 1)
  per_frame = [float(hjb.identity_loss(frames, boxes, np.arange(FRAMES) == k, e_ref, embed, FACE))
               for k in range(FRAMES)]
  loss = float(hjb.identity_loss(frames, boxes, has_face, e_ref, embed, FACE))
  np.testing.assert_allclose(loss, np.mean([per_frame[k] for k in (0, 1, 3, 4)]), rtol=1e-5)
  # No face anywhere: the step leaves x0 as it is.
  z, losses = hjb.hjb_face_step(jnp.asarray(x0), 0.1, decode=decode, embed=embed, boxes=boxes,
                                has_face=np.zeros(FRAMES, bool), reference_embedding=e_ref,
                                iterations=2, face_size=FACE)
  np.testing.assert_array_equal(np.asarray(z), x0)
  assert np.all(np.asarray(losses) == 0)


def test_the_loss_falls_and_the_identity_similarity_rises(nets):
  """Reference = the embedding of the faces another latent decodes to: reachable by moving z."""
  _, (decode, embed) = nets
  x0, masks = _case(1)
  boxes, has_face = hjb.mask_boxes(masks)
  target = jnp.asarray(_case(2)[0])
  faces = jax.vmap(hjb.crop_and_resize, (0, 0, None))(jnp.clip(decode(target), -1, 1), boxes, FACE)
  e_ref = np.asarray(jnp.mean(embed(faces), axis=0))
  z, losses = jax.jit(lambda z: hjb.hjb_face_step(
      z, 0.05, decode=decode, embed=embed, boxes=boxes, has_face=has_face,
      reference_embedding=e_ref, iterations=8, face_size=FACE))(jnp.asarray(x0))
  losses = np.asarray(losses)
  final = float(hjb.identity_loss(jnp.clip(decode(z), -1, 1), boxes, has_face, e_ref, embed, FACE))
  print("HJB losses over 8 iterations:", np.round(losses, 4), "after:", round(final, 4))
  assert final < 0.7 * losses[0]
  assert np.all(np.diff(losses[:4]) < 0)


def test_refine_hook_acts_on_the_configured_steps_only(nets):
  _, (decode, embed) = nets
  x0, masks = _case()
  boxes, has_face = hjb.mask_boxes(masks)
  e_ref = np.random.default_rng(3).standard_normal(FEATURES).astype(np.float32)
  # A large Adam eps keeps the comparison of two compiled programs well-conditioned (see
  # hjb_face_step: at eps 1e-8 rounding moves elements with |g| ~ eps by ~lr / 100).
  cfg = hjb.HJBConfig(first_step=1, last_step=2, iterations=1, learning_rate=0.1, face_size=FACE,
                      adam_eps=1e-4)
  refine = jax.jit(hjb.make_refine_x0(cfg, 4, decode=decode, embed=embed, boxes=boxes,
                                      has_face=has_face, reference_embedding=e_ref))
  batch = jnp.stack([jnp.asarray(x0), jnp.asarray(_case(1)[0])])
  step = jax.jit(lambda z, lr: hjb.hjb_face_step(
      z, lr, decode=decode, embed=embed, boxes=boxes, has_face=has_face,
      reference_embedding=e_ref, iterations=1, face_size=FACE, adam_eps=1e-4)[0])
  for i in range(4):
    out = np.asarray(refine(batch, jnp.int32(i)))
    if i in (1, 2):
      # Video by video as hjb_face_step at lr 0.1 (1 - i / 4).
      for b in range(2):
        want = step(batch[b], 0.1 * (1 - i / 4))
        assert np.abs(np.asarray(want) - np.asarray(batch[b])).max() > 1e-3
        np.testing.assert_allclose(out[b], np.asarray(want), atol=1e-6)
    else:
      np.testing.assert_array_equal(out, np.asarray(batch))


def test_bad_settings_are_one_line_errors():
  with pytest.raises(ValueError, match="iterations=0"):
    hjb.HJBConfig(iterations=0)
  with pytest.raises(ValueError, match="first_step <= last_step"):
    hjb.HJBConfig(first_step=5, last_step=2)
  with pytest.raises(ValueError, match=r"\(F, H, W\)"):
    hjb.mask_boxes(np.zeros((4, 4)))
