"""ID score and CSIM: cosine similarities with skipped frames counted, never scored as zero."""
import numpy as np
import pytest

import jax
import jax.numpy as jnp
import flax.linen as nn

from sem_repa_jax.eval import identity
from sem_repa_jax.models.encoders.arcface import IResNet, IResNetConfig
from sem_repa_jax.models.encoders.face_embed import crop_face, embed
from sem_repa_jax.models.encoders.face_detect import GivenFaces, NoFaceFound


def _at_angles(ref, other, degrees, norms):
  """Vectors at the given angles to ref, in the plane of (ref, other), with the given norms."""
  e1 = ref / np.linalg.norm(ref)
  e2 = other - (other @ e1) * e1
  e2 /= np.linalg.norm(e2)
  a = np.deg2rad(np.asarray(degrees))[:, None]
  return (np.cos(a) * e1 + np.sin(a) * e2) * np.asarray(norms)[:, None]


def test_id_score_and_csim_skip_missing_faces():
  r = np.random.default_rng(0)
  ref, other = r.standard_normal(16), r.standard_normal(16)
  frames = _at_angles(ref, other, [0, 60, 90, 180], [3.0, 0.5, 7.0, 2.0])
  present = np.array([True, True, False, True])
  s = identity.id_score(frames, present, ref * 4.0)
  np.testing.assert_allclose(s.per_frame[[0, 1, 3]], [1.0, 0.5, -1.0], atol=1e-12)
  assert np.isnan(s.per_frame[2]) and (s.count, s.total, s.skipped) == (3, 4, 1)
  assert s.score == pytest.approx((1.0 + 0.5 - 1.0) / 3)
  none = identity.id_score(frames, np.zeros(4, bool), ref)
  assert none.count == 0 and np.isnan(none.score)
  with pytest.raises(NoFaceFound):
    identity.id_score(frames, present, ref, reference_present=False)

  target = _at_angles(ref, other, [0, 0, 0, 0], [1.0] * 4)
  c = identity.csim(frames, present, target, np.array([True, False, True, True]))
  assert c.count == 2 and c.score == pytest.approx((1.0 - 1.0) / 2)


def tiny_arcface():
  """(module, variables) of a random IResNet at 112 with 8 features."""
  cfg = IResNetConfig(layers=(1, 1, 1, 1), widths=(4, 4, 8, 8), num_features=8)
  module = IResNet(cfg)
  # Random values for the abstract tree: compiling init's RNG costs seconds on CPU.
  r = np.random.default_rng(0)
  abstract = nn.unbox(jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, 112, 112, 3))))
  variables = jax.tree_util.tree_map_with_path(
      lambda p, a: (r.uniform(0.5, 1.5, a.shape) if "var" in str(p[-1]) else
                    r.standard_normal(a.shape) * 0.1).astype(np.float32), abstract)
  return module, variables


def test_embed_batches_and_video_score():
  module, variables = tiny_arcface()
  crops = np.random.default_rng(0).uniform(-1, 1, (5, 112, 112, 3)).astype(np.float32)
  got = embed(module, variables, crops, batch_size=2)
  want = np.asarray(jax.jit(module.apply)(variables, crops))
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)

  video = np.random.default_rng(1).integers(0, 256, (3, 120, 100, 3), np.uint8)
  ref_image = video[0]
  boxes = [[10, 10, 90, 110], None, [10, 10, 90, 110]]
  s = identity.video_id_score(module, variables, video, ref_image, GivenFaces(boxes),
                              reference_detector=GivenFaces([[10, 10, 90, 110]]))
  assert (s.count, s.total) == (2, 3) and np.isnan(s.per_frame[1])
  assert s.per_frame[0] == pytest.approx(1.0, abs=1e-5)   # frame 0 is the reference image
  with pytest.raises(NoFaceFound):
    identity.video_id_score(module, variables, video, ref_image, GivenFaces(boxes),
                            reference_detector=GivenFaces([None]))


def test_video_identity_scores_csim_and_id_score_in_one_pass():
  module, variables = tiny_arcface()
  r = np.random.default_rng(2)
  gen = r.integers(0, 256, (3, 120, 100, 3), np.uint8)
  ref = r.integers(0, 256, (3, 120, 100, 3), np.uint8)
  image = r.integers(0, 256, (90, 80, 3), np.uint8)
  box, small = [10, 10, 90, 110], [5, 5, 60, 70]
  # One GivenFaces answers in call order: the generated frames, the reference frames, the image.
  faces = GivenFaces([box, box, None] + [box, None, box] + [small])
  s = identity.video_identity_scores(("id_score", "csim"), module, variables, gen, ref, faces,
                                     image, crop="box")
  emb = lambda frames, b: embed(module, variables, np.stack(
      [crop_face(f, np.asarray(b, float), crop="box") for f in frames]))
  g, t, e = emb(gen[:2], box), emb(ref[[0, 2]], box), emb(image[None], small)
  assert (s["csim"].count, s["csim"].total) == (1, 3)       # frame 1: no reference face; 2: none
  np.testing.assert_allclose(s["csim"].score, identity.cosine_similarity(g[0], t[0]), atol=1e-5)
  assert (s["id_score"].count, s["id_score"].total) == (2, 3)
  np.testing.assert_allclose(s["id_score"].per_frame[:2], identity.cosine_similarity(g, e),
                             atol=1e-5)
  # No image: the reference video's first frame; without a face there, an error naming the video.
  s = identity.video_identity_scores(["id_score"], module, variables, gen, ref,
                                     GivenFaces([box, box, box, box]), crop="box")
  np.testing.assert_allclose(s["id_score"].per_frame, identity.cosine_similarity(
      emb(gen, box), emb(ref[:1], box)), atol=1e-5)
  assert "csim" not in s
  with pytest.raises(NoFaceFound, match="video 'x': no face detected in the first reference frame"):
    identity.video_identity_scores(["id_score"], module, variables, gen, ref,
                                   GivenFaces([box, box, box, None]), crop="box", where="video 'x'")


def test_id_score_at_given_boxes():
  module, variables = tiny_arcface()
  r = np.random.default_rng(3)
  frames = r.integers(0, 256, (3, 60, 50, 3), np.uint8)
  boxes = np.array([[5, 5, 30, 40], [10, 8, 40, 50], [0, 0, 20, 20]], np.float32)
  s = identity.id_score_at_boxes(module, variables, frames, boxes, [True, False, True],
                                 frames[0], boxes[0])
  e = embed(module, variables, np.stack([crop_face(frames[i], boxes[i], crop="square")
                                         for i in (0, 2)]))
  assert (s.count, s.total) == (2, 3) and np.isnan(s.per_frame[1])
  np.testing.assert_allclose(s.per_frame[[0, 2]], [1.0, identity.cosine_similarity(e[1], e[0])],
                             atol=1e-5)
  with pytest.raises(ValueError, match="3 frames, 2 boxes"):
    identity.id_score_at_boxes(module, variables, frames, boxes[:2], [True] * 3, frames[0], boxes[0])
