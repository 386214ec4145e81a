"""VividPose's training pieces that need no U-Net call: the conditioning dropout of the context
(CLIP token and ID tokens dropped together, to exactly the sampler's unconditional context) and
the record fields the objective reads."""
import jax
import jax.numpy as jnp
import numpy as np

from sem_repa_jax.methods.stableanimator.objective import ObjectiveConfig
from sem_repa_jax.methods.vividpose.model import PRESETS, VividPose
from sem_repa_jax.methods.vividpose.objective import BATCH_FIELDS, batch_fields

CFG = PRESETS["tiny"]


def test_dropped_rows_get_the_unconditional_context_and_kept_rows_are_unchanged():
  model = VividPose(CFG.unet, CFG.pose_controller, CFG.id_controller)
  r = np.random.default_rng(0)
  clip = jnp.asarray(r.standard_normal((3, CFG.unet.cross_attention_dim[0])), jnp.float32)
  ids = jnp.asarray(r.standard_normal((3, CFG.id_controller.id_embeddings_dim)), jnp.float32)
  v = model.init(jax.random.key(0), clip, ids, method=VividPose.context)
  keep = jnp.asarray([True, False, True])
  full = model.apply(v, clip, ids, method=VividPose.context)
  dropped = model.apply(v, clip, ids, keep, method=VividPose.context)
  uncond = model.apply(v, jnp.zeros_like(clip), None, method=VividPose.context)
  np.testing.assert_array_equal(dropped[0], full[0])
  np.testing.assert_array_equal(dropped[2], full[2])
  np.testing.assert_array_equal(dropped[1], uncond[1])
  assert np.all(np.asarray(dropped[1]) == 0) and np.abs(np.asarray(full[1, 1:])).max() > 0


def test_face_masks_are_read_only_when_weighted():
  assert batch_fields(ObjectiveConfig(face_mask_weight=0.0)) == BATCH_FIELDS
  assert batch_fields(ObjectiveConfig()) == BATCH_FIELDS + ("face_weight_masks",)
  assert "dense_maps" in BATCH_FIELDS
