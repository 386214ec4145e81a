"""The face recognizer's parts (methods/face_recognition): the ArcFace loss against a direct numpy
writing of its formula, BN calibration, and the verification figures against brute force."""
import jax
import numpy as np

from sem_repa_jax.methods.face_recognition import arcface_loss, verification
from sem_repa_jax.models.encoders.arcface import IResNet, IResNetConfig


def _reference_arcface(cos, labels, s, m):
  total = 0.0
  for c, y in zip(cos.astype(np.float64), labels):
    theta = np.arccos(np.clip(c[y], -1, 1))
    target = np.cos(theta + m) if theta + m < np.pi else c[y] - m * np.sin(m)
    logits = s * c.copy()
    logits[y] = s * target
    total += np.log(np.exp(logits - logits.max()).sum()) + logits.max() - logits[y]
  return total / len(labels)


def test_arcface_loss_matches_its_formula_and_the_margin_only_raises_it():
  rng = np.random.default_rng(0)
  cos = np.tanh(rng.normal(size=(16, 10))).astype(np.float32)
  cos[0, 3] = -0.99     # theta + m past pi: the linear continuation
  labels = rng.integers(0, 10, 16)
  labels[0] = 3
  loss, acc = arcface_loss.arcface_loss(cos, labels, 16.0, 0.4)
  np.testing.assert_allclose(float(loss), _reference_arcface(cos, labels, 16.0, 0.4), rtol=1e-5)
  assert float(acc) == np.mean(cos.argmax(-1) == labels)
  plain, _ = arcface_loss.arcface_loss(cos, labels, 16.0, 0.0)
  assert float(plain) < float(loss)


def test_calibrated_batchnorms_normalize_their_inputs():
  backbone = IResNet(IResNetConfig(layers=(1, 1, 1, 1), widths=(4, 8, 8, 8), num_features=16,
                                   input_size=32))
  model = arcface_loss.ArcFaceTrainer(backbone, 5)
  x = np.random.default_rng(1).uniform(-1, 1, (12, 32, 32, 3)).astype(np.float32)
  v = model.init(jax.random.key(0), x[:1])
  v = arcface_loss.calibrate_batchnorm(model, v, x)
  apply, order = arcface_loss._bn_outputs(model, None)
  outs = apply(v, x)
  assert len(outs) == 19 and order[0] == "backbone/conv1/bn" and order[-1] == "backbone/features"
  for name, y in outs.items():
    y = np.asarray(y, np.float64)
    axes = tuple(range(y.ndim - 1))
    np.testing.assert_allclose(y.mean(axes), 0, atol=1e-3, err_msg=name)
    np.testing.assert_allclose(y.var(axes), 1, atol=2e-3, err_msg=name)


def test_roc_auc_is_the_fraction_of_positive_negative_pairs_ordered_right():
  rng = np.random.default_rng(2)
  scores = np.round(rng.normal(size=60), 1)     # ties
  positive = rng.random(60) < 0.4
  p, n = scores[positive], scores[~positive]
  brute = np.mean((p[:, None] > n[None]) + 0.5 * (p[:, None] == n[None]))
  np.testing.assert_allclose(verification.roc_auc(scores, positive), brute, rtol=1e-12)


def test_verification_figures_of_separated_and_of_confused_identities():
  rng = np.random.default_rng(3)
  centers = rng.normal(size=(5, 8))
  ids = np.repeat(np.arange(5), 6)
  clips = np.tile(np.repeat([0, 1], 3), 5)
  fig = verification.verification_figures(centers[ids] + 0.01 * rng.normal(size=(30, 8)), ids,
                                          clips)
  assert fig["auc"] == 1.0 and fig["rank1"] == 1.0 and fig["intra_cosine"] > 0.99
  assert (fig["num_identities"], fig["num_frames"], fig["num_queries"]) == (5, 30, 15)
  # Embeddings that ignore the identity: chance.
  fig = verification.verification_figures(rng.normal(size=(30, 8)), ids, clips)
  assert abs(fig["auc"] - 0.5) < 0.1 and abs(fig["margin"]) < 0.1
  # Brute force for the means.
  e = centers[ids] + rng.normal(size=(30, 8))
  fig = verification.verification_figures(e, ids, clips)
  u = e / np.linalg.norm(e, axis=1, keepdims=True)
  same = [u[i] @ u[j] for i in range(30) for j in range(i + 1, 30) if ids[i] == ids[j]]
  np.testing.assert_allclose(fig["intra_cosine"], np.mean(same), rtol=1e-10)
