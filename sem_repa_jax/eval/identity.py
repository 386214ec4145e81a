"""Identity metrics from ArcFace embeddings.

ID score (SemanticREPA): the mean cosine similarity between each generated frame's face embedding
and the reference image's face embedding. CSIM (StableAnimator and most animation papers): the
mean cosine similarity between the face embeddings of each generated frame and the ground-truth
frame at the same time. Frames where a needed face was not found are skipped and counted, never
scored as zero; a reference without a face is an error. Faces go through
models/encoders/face_embed.py, the path the annotator's ArcFace targets take.
"""
import dataclasses

import numpy as np

from sem_repa_jax.models.encoders.face_detect import NoFaceFound


@dataclasses.dataclass
class IdentityScore:
  score: float          # mean over the scored frames (nan when none was scored)
  count: int            # frames scored
  total: int            # frames given
  per_frame: np.ndarray  # (total,) cosine similarity, nan where skipped

  @property
  def skipped(self) -> int:
    return self.total - self.count


def cosine_similarity(a, b, eps: float = 1e-12) -> np.ndarray:
  """Row-wise cosine similarity of (..., D) embeddings (ArcFace outputs are unnormalized)."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  num = np.sum(a * b, -1)
  den = np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), eps)
  return num / den


def _score(sims, present) -> IdentityScore:
  present = np.asarray(present, bool)
  per_frame = np.where(present, sims, np.nan)
  count = int(present.sum())
  score = float(np.mean(sims[present])) if count else float("nan")
  return IdentityScore(score, count, len(present), per_frame)


def id_score(frame_embeddings, present, reference_embedding, reference_present: bool = True
             ) -> IdentityScore:
  """frame_embeddings (N, D), present (N,) bool, reference_embedding (D,)."""
  e = np.asarray(frame_embeddings)
  if not reference_present:
    raise NoFaceFound("id_score: no face in the reference image; the ID score is undefined")
  if e.ndim != 2 or np.shape(present) != (len(e),) or np.shape(reference_embedding) != e.shape[1:]:
    raise ValueError(f"id_score: embeddings {e.shape}, present {np.shape(present)} and reference "
                     f"{np.shape(reference_embedding)}: expected (N, D), (N,), (D,)")
  return _score(cosine_similarity(e, np.asarray(reference_embedding)[None]), present)


def csim(generated_embeddings, generated_present, target_embeddings, target_present
         ) -> IdentityScore:
  """Frame-wise CSIM: frames scored where both the generated and the target frame have a face."""
  g, t = np.asarray(generated_embeddings), np.asarray(target_embeddings)
  if g.shape != t.shape or g.ndim != 2:
    raise ValueError(f"csim: generated {g.shape} and target {t.shape} embeddings must be equal "
                     "(N, D) arrays, one row per frame")
  both = np.asarray(generated_present, bool) & np.asarray(target_present, bool)
  return _score(cosine_similarity(g, t), both)


def video_id_score(module, variables, frames, reference, detector,
                   reference_detector=None, crop: str = "landmarks") -> IdentityScore:
  """ID score of a generated video (N, H, W, 3) uint8 RGB against a reference image (H, W, 3).

  reference_detector: for the reference image when it differs (e.g. GivenFaces per video).
  crop: how faces are cut out for ArcFace (face_embed.CROPS), as for the training targets.
  """
  from sem_repa_jax.models.encoders.face_embed import aligned_faces, embed
  ref_crop, ref_present = aligned_faces(np.asarray(reference)[None],
                                        reference_detector or detector, crop)
  if not ref_present[0]:
    raise NoFaceFound("video_id_score: no face detected in the reference image")
  crops, present = aligned_faces(frames, detector, crop)
  emb = embed(module, variables, np.concatenate([ref_crop, crops]))
  return id_score(emb[1:], present, emb[0])


def video_identity_scores(names, module, variables, generated, reference, detector,
                          reference_image=None, crop: str = "landmarks", where: str = "") -> dict:
  """{name: IdentityScore} for `names` among ('csim', 'id_score') of one generated video.

  generated, reference: uint8 RGB (N, H, W, 3), frame i of one against frame i of the other
  (CSIM). reference_image: (H', W', 3), the image the ID score compares every generated frame
  with; None takes the reference video's first frame. One ArcFace pass embeds every face needed.
  where: names the video in the error raised when the ID score's reference image has no face.
  """
  from sem_repa_jax.models.encoders.face_embed import aligned_faces, embed
  names = [n for n in ("csim", "id_score") if n in names]
  n = len(generated)
  parts = [aligned_faces(generated, detector, crop)]
  if "csim" in names:
    parts.append(aligned_faces(reference, detector, crop))
  if "id_score" in names:
    image = np.asarray(reference[0] if reference_image is None else reference_image)
    parts.append(aligned_faces(image[None], detector, crop))
    if not parts[-1][1][0]:
      what = "first reference frame" if reference_image is None else "reference image"
      raise NoFaceFound(f"{where or 'id_score'}: no face detected in the {what}; the ID score "
                        "is undefined")
  emb = embed(module, variables, np.concatenate([crops for crops, _ in parts]))
  out = {}
  if "csim" in names:
    out["csim"] = csim(emb[:n], parts[0][1], emb[n:2 * n], parts[1][1])
  if "id_score" in names:
    out["id_score"] = id_score(emb[:n], parts[0][1], emb[-1])
  return out


def id_score_at_boxes(module, variables, frames, boxes, present, reference, reference_box,
                      crop: str = "square") -> IdentityScore:
  """ID score of frames (N, H, W, 3) uint8 against the face of `reference` (H', W', 3) at
  `reference_box`, the faces cut at given boxes (N, 4) xyxy where `present` (N,): for videos whose
  face positions are known (the driving or real clip's track), e.g. synthetic ones, whose faces
  are too small for a detector. crop: face_embed.CROPS ('square', the face recognizer's)."""
  from sem_repa_jax.models.encoders.face_embed import crop_face, embed
  frames, present = np.asarray(frames), np.asarray(present, bool)
  if len(boxes) != len(frames) or len(present) != len(frames):
    raise ValueError(f"id_score_at_boxes: {len(frames)} frames, {len(boxes)} boxes and "
                     f"{len(present)} presence flags; expected one of each per frame")
  crops = [crop_face(np.asarray(reference), reference_box, crop=crop)]
  crops += [crop_face(f, b, crop=crop) if p else np.zeros_like(crops[0])
            for f, b, p in zip(frames, boxes, present)]
  emb = embed(module, variables, np.stack(crops))
  return id_score(emb[1:], present, emb[0])
