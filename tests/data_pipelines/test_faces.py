"""The annotator's faces: one face track per clip, landmarks through the resize geometry, and the
ArcFace teacher on the same face path as the ID metric."""

import numpy as np
import pytest

from data_pipelines import annotate, annotators, faces, layout, synthetic, teachers
from sem_repa_jax.models.encoders import face_embed
from sem_repa_jax.models.encoders.face_detect import GivenFaces
from tests.data_pipelines import tiny_teachers

SPEC = annotate.ClipSpec(num_frames=5, fps=8.0, height=32, width=48)


@pytest.fixture(scope="module")
def vertical_clip(tmp_path_factory):
  """One vertical synthetic clip (48x32 source, padded into 32x48) whose faces file also holds
  landmarks: the box corners, so mapped landmarks must land on the mapped boxes."""
  root = str(tmp_path_factory.mktemp("syn"))
  entry = synthetic.write_dataset(root, num_clips=1, num_frames=5, height=48, width=32, seed=4,
                                  vertical_fraction=1.0)[0]
  fpath = layout.faces_path(root, entry.clip_id)
  f = dict(np.load(fpath))
  b = f["boxes"]
  f["landmarks"] = np.stack([b[:, :2], b[:, 2:], b[:, :2], b[:, 2:], b[:, :2]], 1)
  np.savez(fpath, **f)
  return root, entry


def test_faces_file_landmarks_follow_the_boxes(vertical_clip):
  root, entry = vertical_clip
  clip = annotate.read_clip(entry, root, SPEC)
  got = faces.FaceSource()(clip)
  p = got.track.present
  assert p.any() and got.identity.shape == (synthetic.IDENTITY_DIM,)
  np.testing.assert_allclose(got.track.landmarks[p][:, 0], got.track.boxes[p][:, :2], atol=1e-4)
  np.testing.assert_allclose(got.track.landmarks[p][:, 1], got.track.boxes[p][:, 2:], atol=1e-4)
  assert got.track.boxes[p][:, 0].min() >= 13        # inside the centered 21-pixel-wide image


class CountingDetector:
  def __init__(self, boxes):
    self.boxes, self.calls = boxes, 0

  def detect(self, image):
    self.calls += 1
    return GivenFaces([self.boxes[self.calls - 1]]).detect(image)


def test_face_annotators_share_one_detection_per_clip(vertical_clip):
  root, entry = vertical_clip
  boxes = [[14, 2, 30, 20], None, [14, 2, 30, 20], [16, 4, 28, 18], None]
  det = CountingDetector(boxes)
  t = annotators.Teachers(encode_video=teachers.codec_encoder(spatial_factor=8), face_detector=det)
  clip = annotate.read_clip(entry, root, SPEC)
  rec = {}
  for a in annotators.for_fields(("face_embeds", "face_boxes"), t):
    rec.update(a(clip))
  assert det.calls == 5                               # once per frame, for both annotators
  assert rec["face_present"].tolist() == [True, False, True, True, False]
  np.testing.assert_array_equal(rec["face_boxes"][3], [16, 4, 28, 18])
  assert rec["face_boxes"].dtype == np.float32 and np.all(rec["face_boxes"][1] == 0)
  # Box-shaped masks: box 0 covers x 14..29, y 2..19: cell (1, 2) of the 8x8 grid (y 8..15,
  # x 16..23) is inside, cell (0, 2) six rows of eight.
  assert rec["face_masks"][0, 1, 2] == 1.0 and rec["face_masks"][0, 0, 2] == 0.75
  assert np.all(rec["face_masks"][1] == 0)


def test_arcface_teacher_and_id_metric_embed_the_same_crops(tmp_path):
  from sem_repa_jax.models import load_pretrained
  dst = tiny_teachers.arcface(str(tmp_path / "arcface"))
  module, variables = load_pretrained(dst)
  frames = np.random.default_rng(1).integers(0, 256, (3, 120, 100, 3), np.uint8)
  lmk = np.array([[30, 40], [60, 40], [45, 60], [33, 80], [58, 80]], np.float64)
  boxes, marks = [[10, 10, 90, 110], [20, 20, 20, 60], None], [lmk, None, None]
  for crop in face_embed.CROPS:
    embed_faces = faces.arcface_embedder(dst, crop=crop)
    track = face_embed.track_faces(frames, GivenFaces(boxes, marks))
    embeds, present = embed_faces(frames, track)
    assert present.tolist() == [True, False, False]   # a zero-width box is no face
    # The ID metric's path: detect, crop, embed.
    crops, found = face_embed.aligned_faces(frames, GivenFaces(boxes, marks), crop)
    assert found.tolist() == [True, True, False]
    np.testing.assert_array_equal(embeds[0], face_embed.embed(module, variables, crops)[0])
  with pytest.raises(ValueError, match="'tight'"):
    faces.arcface_embedder(dst, crop="tight")
