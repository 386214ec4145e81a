"""Identity metrics from ArcFace embeddings.

ID score (SemanticREPA): the mean cosine similarity between each generated frame's face embedding
and the reference image's face embedding. CSIM (StableAnimator and most animation papers): the
mean cosine similarity between the face embeddings of each generated frame and the ground-truth
frame at the same time. Frames where a needed face was not found are skipped and counted, never
scored as zero; a reference without a face is an error.
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


def _jitted_apply(module, variables, x):
  import jax
  global _JIT_APPLY
  if _JIT_APPLY is None:
    # Modules are hashable dataclasses: one compile per (module, shape), reused across calls.
    _JIT_APPLY = jax.jit(lambda m, v, x: m.apply(v, x), static_argnums=0)
  return _JIT_APPLY(module, variables, x)


_JIT_APPLY = None


def embed(module, variables, crops, batch_size: int = 32):
  """ArcFace embeddings (N, D) of crops (N, 112, 112, 3) in [-1, 1], in fixed-size jitted batches
  (the last one padded) so a video compiles once."""
  import jax.numpy as jnp
  crops = np.asarray(crops, np.float32)
  fn = lambda v, x: _jitted_apply(module, v, x)
  out = []
  for s in range(0, len(crops), batch_size):
    chunk = crops[s:s + batch_size]
    pad = batch_size - len(chunk)
    if pad and len(crops) > batch_size:
      chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)])
    out.append(np.asarray(fn(variables, jnp.asarray(chunk)))[:len(crops[s:s + batch_size])])
  return np.concatenate(out) if out else np.zeros((0, module.config.num_features), np.float32)


def video_id_score(module, variables, frames, reference, detector,
                   reference_detector=None) -> IdentityScore:
  """ID score of a generated video (N, H, W, 3) uint8 RGB against a reference image (H, W, 3).

  reference_detector: for the reference image when it differs (e.g. GivenFaces per video).
  """
  from sem_repa_jax.models.encoders.face_detect import aligned_faces
  ref_crop, ref_present = aligned_faces(np.asarray(reference)[None],
                                        reference_detector or detector)
  if not ref_present[0]:
    raise NoFaceFound("video_id_score: no face detected in the reference image")
  crops, present = aligned_faces(frames, detector)
  emb = embed(module, variables, np.concatenate([ref_crop, crops]))
  return id_score(emb[1:], present, emb[0])
