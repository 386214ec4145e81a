"""StableAnimator's training objective against the official train.py computation in torch
(benchmarks/stableanimator_torch.py, from porting-notes.md, StableAnimator "Training"): the same
converted networks, the same sigmas, noise and dropout uniforms, float32, relative error <= 1e-5;
and the official trainable set.

The torch side follows the official step: noisy = x0 + sigma eps; c_noise = 0.25 ln sigma; input
noisy / sqrt(sigma^2 + 1) concatenated with the unscaled reference latents (zeroed for
p <= r < 3p) over every frame; context = [CLIP embedding (zeroed for r < 2p), face tokens of the
un-dropped embedding]; PoseNet features added to conv_in's output; D = c_out F + c_skip noisy;
loss = mean over examples of mean((1 + s^2) / s^2 (D - x0)^2 (1 + M)).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import traverse_util

from benchmarks.stableanimator_torch import P, official_inputs, official_loss
from sem_repa_jax.jobs import train_animator
from sem_repa_jax.methods.stableanimator.objective import (Draws, ObjectiveConfig,
                                                          conditioning_dropout,
                                                          stableanimator_loss)
from sem_repa_jax.training import mesh as mesh_lib, optimizers, sharding
from sem_repa_jax.training.train_state import make_train_state
from tests.stableanimator_models import (FRAMES, ID_DIM, LATENT, SIDE, WIDTH, convert_all,
                                         torch_models, training_config)



def _batch(seed):
  r = np.random.default_rng(seed)
  f32 = lambda *s: r.standard_normal(s).astype(np.float32)
  return {"video_latents": f32(2, FRAMES, SIDE, SIDE, LATENT),
          "reference_latents": 0.2 * f32(2, SIDE, SIDE, LATENT),
          "clip_embeds": f32(2, WIDTH), "id_embeds": 5 * f32(2, ID_DIM),
          "pose_images": r.integers(0, 256, (2, FRAMES, 8 * SIDE, 8 * SIDE, 3), np.uint8),
          "face_weight_masks": r.integers(0, 2, (2, FRAMES, SIDE, SIDE), np.uint8)}


def torch_loss(models, batch, sigma, noise, r):
  with torch.no_grad():
    return float(official_loss(models, official_inputs(batch, sigma, noise, r)))


@pytest.fixture(scope="module")
def trained_from_official(tmp_path_factory):
  """(torch models, job config, model, train state loaded through the job's prepare step)."""
  root = tmp_path_factory.mktemp("sa_objective")
  models = torch_models()
  c = training_config(root / "run", convert_all(root, models))
  model = train_animator.build_model(c)
  example = jax.tree.map(lambda x: jnp.zeros((1,) + x.shape[1:], x.dtype), _batch(0))
  args = train_animator.init_args(model, example)
  from sem_repa_jax.training.train_state import frozen_outside
  frozen = frozen_outside(jax.eval_shape(model.init, jax.random.key(0), *args), c.train.trainable)
  tx, _ = optimizers.make_optimizer(c.optimizer)
  c.mesh.shape = (1, 1, 1)
  mesh = mesh_lib.make_mesh(c, devices=jax.devices()[:1])
  _, init = make_train_state(model.init, jax.random.key(0), *args, tx=tx, mesh=mesh,
                             rules=sharding.axis_rules(c), rng=1, frozen_prefixes=frozen)
  state = train_animator.prepare_state_fn(c)(init())
  return models, c, model, state


@pytest.mark.parametrize("r", [(0.05, 0.25), (0.5, 0.15)])
def test_loss_matches_the_official_step(trained_from_official, r):
  models, _, model, state = trained_from_official
  batch = _batch(1)
  rng = np.random.default_rng(2)
  sigma = np.array([0.4, 6.0], np.float32)
  noise = rng.standard_normal(batch["video_latents"].shape).astype(np.float32)
  r = np.asarray(r, np.float32)
  variables = state.variables()
  network = lambda *a: model.apply(variables, *a)
  loss, metrics = jax.jit(lambda b, d: stableanimator_loss(network, b, d, ObjectiveConfig()))(
      batch, Draws(jnp.asarray(sigma), jnp.asarray(noise), jnp.asarray(r)))
  want = torch_loss(models, batch, sigma, noise, r)
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)
  np.testing.assert_allclose(float(metrics["edm_loss"] + metrics["face_loss"]), float(loss),
                             rtol=1e-6)
  assert float(metrics["face_loss"]) > 0


def test_dropout_masks_are_the_officials():
  r = jnp.linspace(0.0, 0.999, 1000)
  keep_clip, keep_ref = conditioning_dropout(r, P)
  r = np.asarray(r)
  np.testing.assert_array_equal(np.asarray(keep_clip), r >= 0.2)
  np.testing.assert_array_equal(np.asarray(keep_ref), (r < 0.1) | (r >= 0.3))
  # 20 % of the examples lose the CLIP token, 20 % the reference, 10 % both
  assert np.mean(~np.asarray(keep_clip) & ~np.asarray(keep_ref)) == pytest.approx(0.1, abs=2e-3)


def test_trainable_set_is_the_officials(trained_from_official):
  """PoseNet, the face encoder and every U-Net parameter named '...attentions...' train; the
  same number of scalars as the torch modules' official selection; the frozen part is exactly
  the converted files' arrays."""
  (unet, pose, face), _, _, state = trained_from_official
  official = (sum(p.numel() for p in pose.parameters()) + sum(p.numel() for p in face.parameters())
              + sum(p.numel() for n, p in unet.named_parameters() if "attentions" in n))
  frozen_official = sum(p.numel() for n, p in unet.named_parameters() if "attentions" not in n)
  size = lambda tree: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))
  assert size(state.params) == official
  assert size(state.frozen) == frozen_official
  trained = traverse_util.flatten_dict(state.params, sep="/")
  assert all("/attentions_" in k or k.startswith(("params/pose_net/", "params/face_encoder/"))
             for k in trained)
  flat = traverse_util.flatten_dict(state.frozen, sep="/")
  w = unet.conv_in.weight.detach().numpy()                       # (out, in, 3, 3) -> HWIO
  np.testing.assert_array_equal(np.asarray(flat["params/unet/conv_in/kernel"]),
                                w.transpose(2, 3, 1, 0))


def test_a_pattern_that_matches_nothing_is_an_error(trained_from_official):
  from sem_repa_jax.training.train_state import frozen_outside
  _, _, _, state = trained_from_official
  with pytest.raises(ValueError, match=r"params/unet/\*atentions\*.*match no variable"):
    frozen_outside(state.variables(), ("params/unet/*atentions*",))


def test_objective_config_checks():
  with pytest.raises(ValueError, match="conditioning_dropout 0.5"):
    ObjectiveConfig(conditioning_dropout=0.5)
  with pytest.raises(ValueError, match="sigma_density 'uniform'"):
    ObjectiveConfig(sigma_density="uniform")


def test_alignment_gradient_is_finite_for_a_dropped_clip_token():
  """A zero main output (the CLIP token dropped) has zero std: the gradient there is torch's 0,
  not NaN, so the 20 % of rows without CLIP token train (and the ID branch gets no gradient)."""
  from sem_repa_jax.nn.attention_layers import align_distribution
  r = np.random.default_rng(0)
  extra = jnp.asarray(r.standard_normal((2, 6, 2, 4)), jnp.float32)
  main = jnp.asarray(r.standard_normal((2, 6, 2, 4)), jnp.float32).at[0].set(0.0)
  g_e, g_m = jax.grad(lambda e, m: jnp.sum(align_distribution(e, m) ** 2), (0, 1))(extra, main)
  te = torch.tensor(np.asarray(extra), requires_grad=True)
  tm = torch.tensor(np.asarray(main), requires_grad=True)
  dims = (1, 2, 3)
  out = ((te - te.mean(dims, keepdim=True)) * (tm.std(dims, keepdim=True)
                                                / (te.std(dims, keepdim=True) + 1e-5))
         + tm.mean(dims, keepdim=True))
  (out ** 2).sum().backward()
  assert np.all(np.isfinite(np.asarray(g_m)))
  np.testing.assert_allclose(np.asarray(g_e), te.grad.numpy(), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(g_m), tm.grad.numpy(), rtol=1e-5, atol=1e-5)
