"""Face crops for ArcFace: similarity alignment, warps against OpenCV/PyTorch, SCRFD decoding."""
import cv2
import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import jax
import jax.numpy as jnp

from sem_repa_jax.models.encoders import face_align, face_detect, face_embed
from sem_repa_jax.models.encoders.face_detect import Detections, GivenFaces, NoFaceFound


def _similarity(scale, degrees, tx, ty):
  a = np.deg2rad(degrees)
  return np.array([[scale * np.cos(a), -scale * np.sin(a), tx],
                   [scale * np.sin(a), scale * np.cos(a), ty]])


def _apply(m, pts):
  return pts @ m[:, :2].T + m[:, 2]


def _smooth_image(h, w, seed=0):
  r = np.random.default_rng(seed)
  yy, xx = np.mgrid[:h, :w].astype(np.float64)
  img = np.zeros((h, w, 3))
  for c in range(3):
    for _ in range(3):
      fx, fy, ph = r.uniform(0.02, 0.08), r.uniform(0.02, 0.08), r.uniform(0, 6)
      img[..., c] += 40 * np.sin(fx * xx + fy * yy + ph)
  return (img + 127.5).astype(np.float32)


def test_alignment_recovers_a_known_similarity():
  m_true = _similarity(0.6, 17.0, -20.0, 9.0)          # image -> crop
  inv = np.linalg.inv(np.vstack([m_true, [0, 0, 1]]))[:2]
  landmarks = _apply(inv, face_align.ARCFACE_TEMPLATE.astype(np.float64))
  np.testing.assert_allclose(face_align.estimate_norm(landmarks), m_true, atol=1e-9)
  got = face_align.umeyama_jax(jnp.asarray(landmarks[None], jnp.float32),
                               jnp.asarray(face_align.ARCFACE_TEMPLATE))
  np.testing.assert_allclose(np.asarray(got[0]), m_true, rtol=1e-4, atol=2e-3)
  # A mirrored face is not a similarity: the fit must stay a proper rotation (det > 0).
  mirrored = landmarks * np.array([-1.0, 1.0])
  m = face_align.estimate_norm(mirrored)
  assert np.linalg.det(m[:, :2]) > 0


def test_warp_and_norm_crop_match_opencv():
  img = _smooth_image(150, 130)
  m_true = _similarity(0.8, -12.0, -15.0, -10.0)
  inv = np.linalg.inv(np.vstack([m_true, [0, 0, 1]]))[:2]
  landmarks = _apply(inv, face_align.ARCFACE_TEMPLATE.astype(np.float64))
  want = cv2.warpAffine(img, face_align.estimate_norm(landmarks), (112, 112), borderValue=0.0)
  got = np.asarray(face_align.norm_crop(img[None], landmarks[None]))[0]
  # OpenCV quantizes bilinear weights to 1/32 of a pixel: allow that, on a 0..255 scale.
  assert np.max(np.abs(got - want)) < 1.0 and np.mean(np.abs(got - want)) < 0.1
  traced = jax.jit(face_align.norm_crop)(jnp.asarray(img[None]), jnp.asarray(landmarks[None]))
  assert float(jnp.max(jnp.abs(traced[0] - got))) < 0.05
  # An integer translation is an exact cut, black where it leaves the image.
  shift = face_align.warp_affine(jnp.asarray(img[None]),
                                 np.array([[[1.0, 0, -30], [0, 1.0, -50]]]), 112)[0]
  np.testing.assert_array_equal(np.asarray(shift[:100, :100]), img[50:150, 30:130])
  assert float(jnp.abs(shift[100:]).max()) == 0.0


def test_crop_resize_matches_torch_interpolate_and_differentiates():
  img = np.random.default_rng(0).uniform(-1, 1, (3, 40, 50, 3)).astype(np.float32)
  boxes = np.array([[5, 7, 30, 33], [0, 0, 50, 40], [10, 20, 14, 23]], np.int32)   # down, down, up
  got = np.asarray(jax.jit(face_align.crop_resize, static_argnums=2)(img, boxes, 24))
  for b, (x1, y1, x2, y2) in enumerate(boxes):
    crop = torch.from_numpy(img[b, y1:y2, x1:x2]).double().permute(2, 0, 1)[None].contiguous()
    want = torch.nn.functional.interpolate(crop, (24, 24), mode="bilinear", align_corners=False)
    np.testing.assert_allclose(got[b], want[0].permute(1, 2, 0).numpy(), atol=1e-5)
  grad = jax.grad(lambda x: jnp.sum(face_align.crop_resize(x, boxes, 24)))(jnp.asarray(img))
  np.testing.assert_allclose(float(grad.sum()), 3 * 24 * 24 * 3, rtol=1e-5)
  assert float(jnp.abs(grad[0, :7]).max()) == 0.0      # nothing outside the box gets gradient

  mask = np.zeros((2, 40, 50), bool)
  mask[0, 7:33, 5:30] = True
  box, present = face_align.box_from_mask(mask)
  np.testing.assert_array_equal(np.asarray(box[0]), [5, 7, 30, 33])
  assert np.asarray(present).tolist() == [True, False]


def _synthetic_scrfd_outputs(hw=(64, 64)):
  """Raw outputs with two overlapping faces at stride 16 and one small face at stride 8."""
  strides, na = (8, 16, 32), 2
  scores, boxes, kps = [], [], []
  for s in strides:
    n = (hw[0] // s) * (hw[1] // s) * na
    scores.append(np.full((n, 1), 0.01, np.float32))
    boxes.append(np.zeros((n, 4), np.float32))
    kps.append(np.zeros((n, 10), np.float32))
  # stride 16, cell (row 1, col 2), anchors 1 and 0: center (32, 16)
  i = (1 * (hw[1] // 16) + 2) * na
  scores[1][i + 1], boxes[1][i + 1] = 0.9, [1.0, 0.5, 1.5, 2.0]
  kps[1][i + 1] = np.arange(10) * 0.1
  scores[1][i], boxes[1][i] = 0.8, [1.0, 0.5, 1.4, 2.0]      # IoU ~ 0.95 with the first: dropped
  # stride 8, cell (row 5, col 1), anchor 0: center (8, 40)
  j = (5 * (hw[1] // 8) + 1) * na
  scores[0][j], boxes[0][j] = 0.7, [0.5, 0.5, 0.5, 0.5]
  return scores + boxes + kps


def test_scrfd_decode_on_synthetic_outputs():
  outs = _synthetic_scrfd_outputs()
  det = face_detect.decode(outs, (64, 64), threshold=0.5)
  np.testing.assert_allclose(det.scores, [0.9, 0.7])
  np.testing.assert_allclose(det.boxes, [[32 - 16, 16 - 8, 32 + 24, 16 + 32], [4, 36, 12, 44]])
  want_kps = np.array([32.0, 16.0]) + (np.arange(10) * 0.1 * 16).reshape(5, 2)
  np.testing.assert_allclose(det.landmarks[0], want_kps, atol=1e-5)
  assert det.best((64, 64), metric="max") == 0
  empty = face_detect.decode(outs, (64, 64), threshold=0.95)
  assert len(empty) == 0 and empty.landmarks.shape == (0, 5, 2)
  with pytest.raises(NoFaceFound):
    empty.best()


def write_scrfd_stub(path) -> str:
  """A stand-in SCRFD .onnx (its input and 9 outputs) returning the synthetic raw outputs."""
  outs = _synthetic_scrfd_outputs()
  names = [f"{kind}_{s}" for kind in ("score", "bbox", "kps") for s in (8, 16, 32)]
  nodes = [helper.make_node("ReduceMean", ["input.1"], ["m"], keepdims=0),
           helper.make_node("Mul", ["m", "zero"], ["z"])]
  inits = [numpy_helper.from_array(np.zeros((), np.float32), "zero")]
  for name, value in zip(names, outs):
    inits.append(numpy_helper.from_array(value, f"c_{name}"))
    nodes.append(helper.make_node("Add", ["z", f"c_{name}"], [name]))
  graph = helper.make_graph(
      nodes, "scrfd_stub", [helper.make_tensor_value_info("input.1", TensorProto.FLOAT,
                                                          [1, 3, 64, 64])],
      [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names], inits)
  model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
  model.ir_version = 8
  onnx.save(model, str(path))
  return str(path)


def test_scrfd_onnxruntime_session_letterboxes_and_rescales(tmp_path):
  outs = _synthetic_scrfd_outputs()
  write_scrfd_stub(tmp_path / "det.onnx")
  detector = face_detect.SCRFD(str(tmp_path / "det.onnx"))
  image = np.zeros((128, 96, 3), np.uint8)           # tall: scaled by 0.5 into 48x64, padded
  det = detector.detect(image)
  ref = face_detect.decode(outs, (64, 64))
  np.testing.assert_allclose(det.boxes, ref.boxes * 2)
  np.testing.assert_allclose(det.landmarks, ref.landmarks * 2)


def test_aligned_faces_with_given_boxes_and_landmarks():
  frames = np.stack([_smooth_image(120, 100, s) for s in range(3)]).round().astype(np.uint8)
  m_true = _similarity(0.9, 5.0, -5.0, -4.0)
  inv = np.linalg.inv(np.vstack([m_true, [0, 0, 1]]))[:2]
  lmk = _apply(inv, face_align.ARCFACE_TEMPLATE.astype(np.float64))
  det = GivenFaces([[10, 20, 70, 90], None, [0, 0, 50, 60]], [None, None, lmk])
  crops, present = face_embed.aligned_faces(frames, det)
  assert present.tolist() == [True, False, True]
  assert np.all(crops[1] == 0)
  want0 = face_align.crop_resize(frames[:1].astype(np.float32), np.array([[10, 20, 70, 90]]), 112)
  np.testing.assert_allclose(crops[0], (np.asarray(want0[0]) - 127.5) / 127.5, atol=5e-5)
  want2 = face_align.norm_crop(frames[2:].astype(np.float32), lmk[None])
  np.testing.assert_allclose(crops[2], (np.asarray(want2[0]) - 127.5) / 127.5, atol=5e-5)
  assert isinstance(Detections(np.zeros((0, 4)), np.zeros(0), None), Detections)


# sha256 of data_pipelines.teachers.crop_faces(frames, boxes) at commit bc1e7d2 (the annotator's
# box crop before the one face path), for the frames and boxes of the test below.
SQUARE_CROPS_AT_BC1E7D2 = "5ba85fb08103c00154f98b79373c9ebce7aef7e0a3ea58962c0334158e6dc2ef"


def test_square_crop_is_the_annotators_former_crop():
  import hashlib
  r = np.random.default_rng(3)
  frames = r.integers(0, 256, (4, 40, 60, 3), np.uint8)
  boxes = np.array([[10, 5, 30, 35], [-8, -4, 20, 30], [50.4, 20.6, 70.2, 45.1], [0, 0, 0, 0]],
                   np.float32)
  track = face_embed.FaceTrack(boxes.astype(np.float64), np.ones(4, bool))
  crops, present = face_embed.crop_faces(frames, track, "square")
  assert crops.dtype == np.float32 and present.all()
  assert hashlib.sha256(crops.tobytes()).hexdigest() == SQUARE_CROPS_AT_BC1E7D2
  # Box 0 is 20x30: the 30x30 square at (5, 5) (in the frame), area-resampled.
  want = cv2.resize(frames[0, 5:35, 5:35], (112, 112), interpolation=cv2.INTER_AREA)
  np.testing.assert_array_equal(crops[0], (want / 127.5 - 1.0).astype(np.float32))


def test_crop_setting_chooses_alignment_or_box():
  frames = np.stack([_smooth_image(120, 100, s) for s in range(2)]).round().astype(np.uint8)
  m_true = _similarity(0.9, 5.0, -5.0, -4.0)
  inv = np.linalg.inv(np.vstack([m_true, [0, 0, 1]]))[:2]
  lmk = _apply(inv, face_align.ARCFACE_TEMPLATE.astype(np.float64))
  track = face_embed.track_faces(frames, GivenFaces([[10, 20, 70, 90], [0, 0, 50, 60]],
                                                    [None, lmk]))
  np.testing.assert_array_equal(track.boxes, [[10, 20, 70, 90], [0, 0, 50, 60]])
  assert np.isnan(track.landmarks[0]).all()
  np.testing.assert_allclose(track.landmarks[1], lmk, atol=1e-4)
  aligned = face_embed.crop_faces(frames, track, "landmarks")[0]
  boxed = face_embed.crop_faces(frames, track, "box")[0]
  want_box = face_align.crop_resize(frames.astype(np.float32), track.boxes.astype(np.int32), 112)
  np.testing.assert_allclose(boxed, (np.asarray(want_box) - 127.5) / 127.5, atol=5e-5)
  np.testing.assert_array_equal(aligned[0], boxed[0])    # no landmarks: the box crop
  want_lmk = face_align.norm_crop(frames[1:].astype(np.float32), track.landmarks[1:])
  np.testing.assert_allclose(aligned[1], (np.asarray(want_lmk[0]) - 127.5) / 127.5, atol=5e-5)
  assert np.abs(aligned[1] - boxed[1]).mean() > 0.05
  empty = face_embed.track_faces(frames, GivenFaces([None, None]))
  assert not empty.present.any() and empty.landmarks is None
  assert np.all(face_embed.crop_faces(frames, empty, "square")[0] == 0)
  with pytest.raises(ValueError, match="'tight'"):
    face_embed.crop_face(frames[0], track.boxes[0], crop="tight")
