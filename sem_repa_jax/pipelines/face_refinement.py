"""What every pipeline with HJB face optimization (diffusion/hjb.py) shares: the face targets from
the user's masks (the driving or wanted face box of every decoded frame, and the reference face's
embedding: the reference image cropped by its own mask, resized to the face embedder's input), and
the sampler hook built from them.
"""
import dataclasses
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from sem_repa_jax.diffusion.hjb import HJBConfig, crop_and_resize, make_refine_x0, mask_boxes


@dataclasses.dataclass(frozen=True)
class FaceTargets:
  boxes: jax.Array                  # (F, 4) int32 [y_min, y_max, x_min, x_max] per decoded frame
  has_face: jax.Array               # (F,) bool
  reference_embedding: jax.Array    # (D,)


# A pytree, so the targets enter the compiled sampling program as arrays.
jax.tree_util.register_dataclass(FaceTargets, data_fields=["boxes", "has_face",
                                                           "reference_embedding"], meta_fields=[])


def _reference_embedding(face_embedder, face_embedder_vars, image, box, face_size: int):
  face = crop_and_resize(image, box, face_size)[None]
  return face_embedder.apply(face_embedder_vars, face)[0].astype(jnp.float32)


_REFERENCE_EMBEDDING = jax.jit(_reference_embedding, static_argnums=(0, 4))


def face_targets(config: HJBConfig, face_embedder, face_embedder_vars, *, face_masks,
                 num_frames: int, height: int, width: int, reference_image,
                 reference_face_mask) -> FaceTargets:
  """Checked face targets. face_masks (num_frames, height, width) of the decoded frames (face
  pixels > 0.5, or > 127 for uint8); reference_image (H0, W0, 3) float in [-1, 1] at its own
  size and reference_face_mask (H0, W0)."""
  if face_embedder is None:
    raise ValueError("HJB is set but the pipeline has no face_embedder (ArcFace)")
  if face_masks is None or reference_face_mask is None:
    raise ValueError(f"HJB needs face_masks ({num_frames}, {height}, {width}) of the frames and "
                     "reference_face_mask (H0, W0) of the reference image")
  masks = np.asarray(face_masks)
  if masks.shape != (num_frames, height, width):
    raise ValueError(f"face_masks of shape {masks.shape}: expected ({num_frames}, {height}, "
                     f"{width})")
  ref_mask = np.asarray(reference_face_mask)
  image = np.asarray(reference_image, np.float32)
  if ref_mask.shape != image.shape[:2]:
    raise ValueError(f"reference_face_mask of shape {ref_mask.shape}: expected the reference "
                     f"image's {image.shape[:2]}")
  ref_box, ref_has = mask_boxes(ref_mask[None])
  if not ref_has[0]:
    raise ValueError("reference_face_mask has no face pixel: HJB needs the reference face")
  boxes, has_face = mask_boxes(masks)
  embedding = _REFERENCE_EMBEDDING(face_embedder, face_embedder_vars, jnp.asarray(image),
                                   jnp.asarray(ref_box[0]), config.face_size)
  return FaceTargets(jnp.asarray(boxes), jnp.asarray(has_face), embedding)


def refine_hook(config: Optional[HJBConfig], num_steps: int, targets: Optional[FaceTargets], *,
                decode: Callable, embed: Callable):
  """The sampler's refine_x0 for `config` (None: no hook). decode(z (F_lat, h, w, C)) -> frames
  (F, H, W, 3) of one video; embed(faces) -> embeddings."""
  if config is None:
    return None
  return make_refine_x0(config, num_steps, decode=decode, embed=embed, boxes=targets.boxes,
                        has_face=targets.has_face,
                        reference_embedding=targets.reference_embedding)
