"""StableAnimator++'s pose alignment (sem_repa_jax/methods/pose_alignment/): the Procrustes fit
against Umeyama's solution written out in numpy and on exact similarity copies (the reflection case
too), the batched least squares against the official numpy fit, the perturbation and the loss, and
the aligner's start at the SVD-only answer."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from data_pipelines.poses import align
from data_pipelines.poses.keypoints import PoseKeypoints
from sem_repa_jax.methods.pose_alignment import aligner, baselines, objective, similarity


def _umeyama(src, dst, w):
  """The weighted least-squares similarity src -> dst, with numpy's SVD (Umeyama 1991)."""
  w = w / w.sum()
  mu_s, mu_t = w @ src, w @ dst
  x, y = src - mu_s, dst - mu_t
  u, s, vt = np.linalg.svd((w[:, None] * x).T @ y)
  d = np.sign(np.linalg.det(vt.T @ u.T))
  fix = np.diag([1.0, d])
  r = vt.T @ fix @ u.T
  scale = np.trace(np.diag(s) @ fix) / (w @ (x * x).sum(1))
  return scale, r, mu_t - scale * r @ mu_s


def test_procrustes_recovers_a_known_similarity_exactly_and_ignores_missing_points():
  rng = np.random.default_rng(0)
  src = rng.uniform(0, 1, (5, 18, 2)).astype(np.float32)
  angle, scale = rng.uniform(-np.pi, np.pi, 5), rng.uniform(0.3, 3, 5)
  shift = rng.uniform(-1, 1, (5, 2))
  truth = similarity.Similarity(jnp.asarray(scale, jnp.float32),
                                similarity.rotation_matrix(jnp.asarray(angle, jnp.float32)),
                                jnp.asarray(shift, jnp.float32))
  dst = np.array(similarity.apply(truth, src))
  w = np.ones((5, 18), np.float32)
  w[:, [3, 7, 12]] = 0
  dst[:, [3, 7, 12]] = rng.uniform(-5, 5, (5, 3, 2))     # garbage where the points are missing
  fit = similarity.procrustes(src, dst, w)
  np.testing.assert_allclose(fit.scale, scale, rtol=1e-5)
  np.testing.assert_allclose(similarity.rotation_angle(fit.rotation), angle, atol=1e-5)
  np.testing.assert_allclose(fit.translation, shift, atol=1e-5)


def test_procrustes_equals_umeyama_on_noisy_sets_and_keeps_a_proper_rotation_on_a_mirror():
  rng = np.random.default_rng(1)
  src = rng.normal(size=(4, 18, 2))
  dst = 1.7 * src @ np.array([[0.0, -1.0], [1.0, 0.0]]).T + rng.normal(0, 0.3, (4, 18, 2))
  dst[3] = src[3] * np.array([-1.0, 1.0]) + 0.5            # a mirror image: no proper rotation fits
  w = rng.uniform(0.2, 1.0, (4, 18))
  fit = similarity.procrustes(src, dst, w)
  for b in range(4):
    s, r, t = _umeyama(src[b], dst[b], w[b])
    np.testing.assert_allclose(fit.scale[b], s, rtol=1e-4)
    np.testing.assert_allclose(fit.rotation[b], r, atol=1e-5)
    np.testing.assert_allclose(fit.translation[b], t, atol=1e-4)
  np.testing.assert_allclose(np.linalg.det(np.asarray(fit.rotation)), 1.0, atol=1e-5)
  # The mirror's best proper rotation: the closed-form 2-D angle atan2(sum cross, sum dot).
  x = src[3] - np.average(src[3], 0, w[3])
  y = dst[3] - np.average(dst[3], 0, w[3])
  best = np.arctan2((w[3] * (x[:, 0] * y[:, 1] - x[:, 1] * y[:, 0])).sum(), (w[3] * (x * y).sum(1)).sum())
  np.testing.assert_allclose(similarity.rotation_angle(fit.rotation[3]), best, atol=1e-5)


def test_procrustes_falls_back_to_the_centroid_shift_with_one_point():
  src = np.zeros((1, 18, 2), np.float32)
  dst = np.full((1, 18, 2), 0.5, np.float32)
  w = np.zeros((1, 18), np.float32)
  w[0, 4] = 1
  fit = similarity.procrustes(src, dst, w)
  np.testing.assert_allclose(fit.scale, [1.0])
  np.testing.assert_allclose(fit.rotation[0], np.eye(2))
  np.testing.assert_allclose(fit.translation, [[0.5, 0.5]])


def test_compose_and_about():
  rng = np.random.default_rng(2)
  p = jnp.asarray(rng.normal(size=(3, 18, 2)), jnp.float32)
  a = similarity.about(jnp.array([0.5, 2.0, 1.0]), jnp.array([0.1, -1.0, 2.0]),
                       jnp.asarray(rng.normal(size=(3, 2)), jnp.float32), p[:, 0])
  b = similarity.Similarity(jnp.array([1.5, 0.7, 1.1]), similarity.rotation_matrix(jnp.array([0.3, 0.2, -2.0])),
                            jnp.asarray(rng.normal(size=(3, 2)), jnp.float32))
  np.testing.assert_allclose(similarity.apply(similarity.compose(a, b), p),
                             similarity.apply(a, similarity.apply(b, p)), atol=1e-5)
  # `about` keeps its center where the shift puts it.
  moved = similarity.apply(a, p[:, :1])[:, 0]
  np.testing.assert_allclose(moved - p[:, 0], a.translation + a.scale[:, None] *
                             jnp.einsum("bij,bj->bi", a.rotation, p[:, 0]) - p[:, 0], atol=1e-5)


def _keypoints(body, scores):
  empty = PoseKeypoints.empty()
  return PoseKeypoints(body, scores, empty.hands, empty.hand_scores, empty.face, empty.face_scores)


def test_batched_least_squares_equals_the_official_numpy_fit():
  rng = np.random.default_rng(3)
  ref, drv = rng.uniform(0.2, 0.8, (6, 18, 2)), rng.uniform(0.2, 0.8, (6, 18, 2))
  ref_s, drv_s = np.ones((6, 18)), np.ones((6, 18))
  ref_s[0, 9] = 0
  drv_s[1, [1, 12]] = 0
  ref_s[2, 4] = 0                          # not an alignment point: changes nothing
  fit = baselines.least_squares(*(jnp.asarray(a, jnp.float32) for a in (ref, ref_s, drv, drv_s)))
  for b in range(6):
    scale, offset = align.fit_alignment(_keypoints(ref[b], ref_s[b]),
                                        PoseKeypoints.stack([_keypoints(drv[b], drv_s[b])]))
    np.testing.assert_allclose(fit.scale[b], scale[0], rtol=1e-4)
    np.testing.assert_allclose(fit.translation[b], offset, atol=1e-5)
    np.testing.assert_allclose(fit.rotation[b], np.eye(2))


def test_misalign_moves_present_points_by_the_similarity_it_returns():
  rng = np.random.default_rng(4)
  pts = jnp.asarray(rng.uniform(0, 1, (8, 18, 2)), jnp.float32)
  scores = jnp.asarray(rng.uniform(size=(8, 18)) > 0.2, jnp.float32)
  m = objective.Misalignment(30.0, (0.5, 2.0), 0.3, drop_rate=0.25)
  moved, kept, sim = objective.misalign(jax.random.key(0), pts, scores, m)
  present = np.asarray(scores) > 0
  np.testing.assert_allclose(np.asarray(moved)[present],
                             np.asarray(similarity.apply(sim, pts))[present], atol=1e-6)
  assert np.all(np.asarray(moved)[~present] == 0)
  assert np.all(np.asarray(kept) <= np.asarray(scores)) and float(kept.sum()) < float(scores.sum())
  angle = np.degrees(np.asarray(similarity.rotation_angle(sim.rotation)))
  assert np.all(np.abs(angle) <= 30) and np.all((sim.scale >= 0.5) & (sim.scale <= 2.0))
  # the loss of the exact inverse is 0, of the misaligned pose the mean distance
  inverse = similarity.procrustes(moved, pts, scores)
  assert float(objective.alignment_loss(similarity.apply(inverse, moved), pts, scores)) < 1e-5
  d = np.linalg.norm(np.asarray(moved - pts), axis=-1)[present].mean()
  np.testing.assert_allclose(objective.alignment_loss(moved, pts, scores), d, rtol=1e-5)


def test_torso_normalized_error():
  pts = np.zeros((1, 18, 2), np.float32)
  pts[0, objective.NECK] = [0, 0]
  pts[0, objective.R_HIP], pts[0, objective.L_HIP] = [-1, 2], [1, 2]
  scores = np.ones((1, 18), np.float32)
  err = objective.alignment_error(pts + np.array([0.0, 0.5], np.float32), pts, scores)
  np.testing.assert_allclose(err, [0.25])
  scores[0, objective.L_HIP] = 0
  assert np.isnan(objective.alignment_error(pts, pts, scores)[0])


def test_an_untrained_aligner_is_the_svd_only_baseline_and_rejects_bad_shapes():
  rng = np.random.default_rng(5)
  ref = jnp.asarray(rng.uniform(0, 1, (3, 18, 2)), jnp.float32)
  drv = jnp.asarray(rng.uniform(0, 1, (3, 18, 2)), jnp.float32)
  s = jnp.asarray(rng.uniform(size=(3, 18)) > 0.3, jnp.float32)
  model = aligner.PoseAligner(aligner.PoseAlignerConfig(width=16, heads=2, encoder_layers=1,
                                                        fusion_layers=2))
  variables = model.init(jax.random.key(0), ref, s, drv, s)
  out = model.apply(variables, ref, s, drv, s)
  svd = baselines.svd_only(ref, s, drv, s)
  for got, want in ((out["final"], svd), (out["svd"], svd)):
    np.testing.assert_allclose(similarity.apply(got, drv), similarity.apply(want, drv), atol=1e-5)
  with pytest.raises(ValueError, match=r"expected both \(B, 18, 2\)"):
    model.apply(variables, ref[:, :17], s[:, :17], drv[:, :17], s[:, :17])
