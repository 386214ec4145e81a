import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sem_repa_jax.diffusion import parameterization, schedules
from sem_repa_jax.methods.semrepa import losses
from sem_repa_jax.methods.semrepa.frames import latent_frame_groups, pool_face_embeddings
from sem_repa_jax.methods.semrepa.id_alignment import IDAlignmentConfig, IDAlignmentModule


def test_latent_frame_groups_follow_the_vae():
  assert latent_frame_groups(9) == [[0], [1, 2, 3, 4], [5, 6, 7, 8]]
  assert len(latent_frame_groups(49)) == 13
  with pytest.raises(ValueError, match="1 \\+ 4k"):
    latent_frame_groups(10)


def test_pooling_masks_frames_without_faces():
  r = np.random.default_rng(0)
  e = r.standard_normal((2, 9, 8)).astype(np.float32)
  present = np.ones((2, 9), bool)
  present[0, 1:5] = False            # latent frame 1 of clip 0 has no face at all
  present[1, 5:8] = False            # latent frame 2 of clip 1 keeps only video frame 8
  pooled, mask = pool_face_embeddings(e, present)
  assert mask.tolist() == [[True, False, True], [True, True, True]]
  np.testing.assert_array_equal(np.asarray(pooled[0, 1]), 0)
  unit = e / np.linalg.norm(e, axis=-1, keepdims=True)
  np.testing.assert_allclose(np.asarray(pooled[1, 2]), unit[1, 8], atol=1e-6)
  m = unit[0, 1:5].mean(0)
  np.testing.assert_allclose(np.asarray(pooled[1, 1]),
                             (unit[1, 1:5].mean(0)) / np.linalg.norm(unit[1, 1:5].mean(0)), atol=1e-6)
  assert np.isfinite(m).all()


@pytest.mark.parametrize("use_depth", [True, False])
def test_id_module_gives_unit_embeddings_per_latent_frame(use_depth):
  cfg = IDAlignmentConfig(latent_channels=4, use_depth=use_depth, channels=(8, 16), blocks_per_stage=1,
                          norm_groups=4, embed_dim=12)
  m = IDAlignmentModule(cfg)
  z = jax.random.normal(jax.random.key(0), (2, 3, 8, 8, 4))
  d = jax.random.normal(jax.random.key(1), (2, 3, 8, 8, 4))
  v = m.init(jax.random.key(2), z, d if use_depth else None)
  e = m.apply(v, z, d if use_depth else None)
  assert e.shape == (2, 3, 12)
  np.testing.assert_allclose(np.linalg.norm(np.asarray(e), axis=-1), 1.0, atol=1e-5)
  # Frames are independent: changing frame 1 changes only embedding 1.
  z2 = z.at[:, 1].add(1.0)
  e2 = m.apply(v, z2, d if use_depth else None)
  np.testing.assert_array_equal(np.asarray(e2[:, 0]), np.asarray(e[:, 0]))
  assert np.abs(np.asarray(e2[:, 1] - e[:, 1])).max() > 1e-4
  if use_depth:
    with pytest.raises(ValueError, match="needs depth latents"):
      m.apply(v, z, None)


def test_masked_l1_ignores_faceless_frames():
  pred = jnp.array([[[1.0, 1.0], [5.0, 5.0]]])
  tgt = jnp.zeros((1, 2, 2))
  assert float(losses.masked_l1(pred, tgt, jnp.array([[True, False]]))) == 1.0
  assert float(losses.masked_l1(pred, tgt, jnp.array([[False, False]]))) == 0.0


def _toy_modules():
  sam = lambda z, t: 0.5 * z + 0.01 * t.astype(jnp.float32)[:, None, None, None, None]
  idm = lambda z, d: jnp.tanh(jnp.mean(z + d, axis=(2, 3)))
  return sam, idm


AB = schedules.cogvideox_alphas_cumprod(3.0)


def test_finetune_loss_terms_match_their_definitions():
  k = jax.random.split(jax.random.key(0), 4)
  z0, d0, eps, noise = (jax.random.normal(ki, (2, 3, 4, 4, 2)) for ki in k)
  t = jnp.array([100, 700])
  ab = jnp.asarray(AB, jnp.float32)[t][:, None, None, None, None]
  z_t = jnp.sqrt(ab) * z0 + jnp.sqrt(1 - ab) * eps
  v = jnp.sqrt(ab) * eps - jnp.sqrt(1 - ab) * z0
  v_hat = v + 0.1 * noise
  sam, idm = _toy_modules()
  mask = jnp.array([[True, True, False], [True, False, True]])
  cfg = losses.SemRepaLossConfig(lambda_structure=0.01, lambda_id=1.0)
  total, m = losses.finetune_losses(v_hat, z_t, z0, d0, eps, t, mask, sam, idm, cfg, AB)
  z0_hat = jnp.sqrt(ab) * z_t - jnp.sqrt(1 - ab) * v_hat
  np.testing.assert_allclose(m["loss_diffusion"], jnp.mean((z0_hat - z0) ** 2 / (1 - ab)), rtol=1e-4)
  d_hat = sam(z0_hat, jnp.zeros(2, jnp.int32))
  np.testing.assert_allclose(m["loss_structure"], jnp.mean((d_hat - d0) ** 2), rtol=1e-5)
  diff = jnp.abs(idm(z0_hat, d_hat) - idm(z0, d0)).mean(-1)
  np.testing.assert_allclose(m["loss_id"], (diff * mask).sum() / mask.sum(), rtol=1e-5)
  np.testing.assert_allclose(total, m["loss_diffusion"] + 0.01 * m["loss_structure"] + m["loss_id"],
                             rtol=1e-6)


def test_noisy_structure_variant_uses_the_previous_noise_level():
  k = jax.random.split(jax.random.key(1), 3)
  z0, d0, eps = (jax.random.normal(ki, (2, 3, 4, 4, 2)) for ki in k)
  t = jnp.array([10, 0])
  v = parameterization.velocity(AB, z0, eps, t)
  z_t = schedules.add_noise(AB, z0, eps, t)
  # With a perfect prediction the DDIM step lands exactly on z_{t-1} of the same noise (z0 at t=0).
  z_prev = losses.ddim_previous(AB, z_t, v, t)
  np.testing.assert_allclose(z_prev[0], schedules.add_noise(AB, z0, eps, t - 1)[0], atol=1e-5)
  np.testing.assert_allclose(z_prev[1], z0[1], atol=1e-5)
  sam = lambda z, t: z              # a SAM that copies its input is perfect iff d0 == z0
  idm = lambda z, d: jnp.mean(z, axis=(2, 3))
  cfg = losses.SemRepaLossConfig(structure_input="noisy")
  _, m = losses.finetune_losses(v, z_t, z0, z0, eps, t, jnp.ones((2, 3), bool), sam, idm, cfg, AB)
  assert float(m["loss_diffusion"]) < 1e-10
  assert float(m["loss_structure"]) < 1e-10
  assert float(m["loss_id"]) < 1e-6


def test_gradients_reach_only_the_prediction():
  k = jax.random.split(jax.random.key(2), 3)
  z0, d0, eps = (jax.random.normal(ki, (1, 3, 4, 4, 2)) for ki in k)
  t = jnp.array([300])
  z_t = schedules.add_noise(AB, z0, eps, t)
  cfg = losses.SemRepaLossConfig()

  def loss(v_hat, w):
    sam = lambda z, t: jax.lax.stop_gradient(w) * z
    idm = lambda z, d: jnp.mean(z * d, axis=(2, 3))
    return losses.finetune_losses(v_hat, z_t, z0, d0, eps, t, jnp.ones((1, 3), bool), sam, idm,
                                  cfg, AB)[0]

  gv, gw = jax.grad(loss, argnums=(0, 1))(jnp.zeros_like(z0), jnp.array(0.5))
  assert float(jnp.abs(gv).max()) > 0
  assert float(gw) == 0.0


def test_structure_alignment_module_is_a_pruned_backbone():
  from sem_repa_jax.models.cogvideox.transformer import CogVideoXTransformerConfig
  from sem_repa_jax.methods.semrepa.structure_alignment import (StructureAlignmentModule,
                                                               structure_alignment_config)
  backbone = CogVideoXTransformerConfig(num_attention_heads=2, attention_head_dim=16, in_channels=8,
                                        out_channels=4, text_embed_dim=8, num_layers=4,
                                        sample_height=8, sample_width=8, sample_frames=5,
                                        use_rotary_positional_embeddings=True,
                                        use_learned_positional_embeddings=True)
  cfg = structure_alignment_config(backbone, num_layers=1)
  assert (cfg.num_layers, cfg.in_channels, cfg.out_channels) == (1, 4, 4)
  m = StructureAlignmentModule(cfg)
  z = jax.random.normal(jax.random.key(0), (1, 2, 4, 6, 4))
  v = m.init(jax.random.key(1), z, jnp.zeros((1,), jnp.int32))
  d0 = m.apply(v, z, jnp.zeros((1,), jnp.int32))
  d1 = m.apply(v, z, jnp.full((1,), 500))
  assert d0.shape == z.shape
  assert float(jnp.abs(d0 - d1).max()) > 1e-5     # the timestep conditions the prediction
  with pytest.raises(ValueError, match="num_layers=0"):
    structure_alignment_config(backbone, num_layers=0)


def test_capped_diffusion_weight():
  """max_diffusion_weight bounds L_t's weight 1/(1 - ab) on the x0 error; above every weight it is L_t."""
  k = jax.random.split(jax.random.key(3), 3)
  z0, eps, noise = (jax.random.normal(ki, (3, 3, 4, 4, 2)) for ki in k)
  t = jnp.array([0, 300, 999])          # weights 393, 1.44, 1.0 on the x0 error (AB: shift 3)
  z_t = schedules.add_noise(AB, z0, eps, t)
  ab = jnp.asarray(AB, jnp.float32)[t][:, None, None, None, None]
  z0_hat = z0 + 0.1 * noise             # the same x0 error at every timestep
  v_hat = (jnp.sqrt(ab) * z_t - z0_hat) / jnp.sqrt(1 - ab)
  sam, idm = _toy_modules()
  mask = jnp.ones((3, 3), bool)

  def l_t(cap):
    cfg = losses.SemRepaLossConfig(max_diffusion_weight=cap)
    return float(losses.finetune_losses(v_hat, z_t, z0, z0, eps, t, mask, sam, idm, cfg, AB)[1]
                 ["loss_diffusion"])

  err = (z0_hat - z0) ** 2
  np.testing.assert_allclose(l_t(5.0), jnp.mean(jnp.minimum(1 / (1 - ab), 5.0) * err), rtol=1e-5)
  np.testing.assert_allclose(l_t(1.0), jnp.mean(err), rtol=1e-5)      # plain x0-MSE
  np.testing.assert_allclose(l_t(1e6), l_t(0.0), rtol=1e-4)           # no weight reaches the cap
  assert l_t(5.0) < 0.05 * l_t(0.0)     # the t = 0 example dominates the uncapped loss
  with pytest.raises(ValueError, match="max_diffusion_weight"):
    losses.SemRepaLossConfig(max_diffusion_weight=-1.0)
