"""SemanticREPA stages 1 and 2 end to end on tiny synthetic records: losses fall, frozen modules
stay frozen, resume is exact, and the sharded stage-2 step equals the unsharded one."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from sem_repa_jax.jobs import _semrepa, finetune
from sem_repa_jax.methods.semrepa import factory
from sem_repa_jax.training import checkpoint
from sem_repa_jax.models import load_pretrained
from tests.jobs.semrepa_setup import training_config as _config


def _losses(workdir, key):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line)[key] for line in f]


def test_stage1_losses_fall_and_modules_export(stage1):
  sam, idm = _losses(stage1, "sam_mse"), _losses(stage1, "idm_l1")
  assert sam[-1] < 0.9 * sam[0] and idm[-1] < idm[0]
  module, variables = load_pretrained(os.path.join(stage1, _semrepa.ALIGNMENT_DIRNAME))
  assert set(variables["params"]) == {"structure_alignment", "id_alignment"}
  z = jnp.zeros((1, 2, 16, 24, 48))
  e = module.apply(variables, z, z, method=module.predict_identity)
  np.testing.assert_allclose(np.linalg.norm(np.asarray(e), axis=-1), 1.0, atol=1e-5)


def _restore(workdir):
  from sem_repa_jax.training import checkpoint
  import orbax.checkpoint as ocp
  step = checkpoint.Checkpointer(workdir).latest_step()
  mgr = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))
  state = mgr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
  return step, state


def test_stage2_trains_only_the_transformer_and_resumes_exactly(records, stage1, tmp_path):
  import shutil
  align_dir = os.path.join(stage1, _semrepa.ALIGNMENT_DIRNAME)
  c = _config(records, tmp_path / "ft", "finetune", 4, alignment_dir=align_dir)
  c.checkpoint.every_steps = 2
  finetune.run(c)                                      # checkpoints at steps 2 and 4
  step, uninterrupted = _restore(c.workdir)
  assert step == 4
  # "Kill" after step 2: drop the last checkpoint, run again; it resumes at step 2.
  shutil.rmtree(os.path.join(c.workdir, "checkpoints", "4"))
  finetune.run(c)
  step, resumed = _restore(c.workdir)
  assert step == 4
  for x, y in zip(jax.tree.leaves(uninterrupted), jax.tree.leaves(resumed)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))       # bitwise, data position too
  assert [json.loads(l)["step"] for l in open(os.path.join(c.workdir, "metrics.jsonl"))] == [2, 4]
  # The frozen alignment modules are exactly stage 1's export; only the transformer is trained.
  _, exported = load_pretrained(align_dir)
  frozen = traverse_util.flatten_dict(resumed["frozen"], sep="/")
  for k, v in traverse_util.flatten_dict(exported, sep="/").items():
    np.testing.assert_array_equal(np.asarray(frozen[k]), np.asarray(v))
  assert set(resumed["params"]["params"]) == {"transformer"}
  assert np.all(np.isfinite(_losses(c.workdir, "loss_structure")))
  assert _losses(c.workdir, "loss_id")[0] > 0


def test_stage2_sharded_step_equals_unsharded(records, stage1):
  from sem_repa_jax.methods.semrepa.model import ALIGNMENT_PREFIXES
  from tests.sharded_step import assert_mesh_step_matches_single_device
  c = _config(records, "/unused", "finetune", 1)
  model = factory.build(**factory.module_kwargs(c, with_backbone=True))
  loss_fn = finetune.make_loss_fn(model, c, factory.alphas_cumprod(c))
  batch = next(iter(_semrepa.record_dataset(c)))
  z = jnp.asarray(batch["video_latents"][:1])
  x = finetune.model_input(z, jnp.asarray(batch["image_latents"][:1]), jnp.ones((1,), bool))
  init_args = (z, jnp.zeros((1,), jnp.int32), x, None, None)
  assert_mesh_step_matches_single_device(c, model.init, init_args, loss_fn, batch,
                                         frozen=ALIGNMENT_PREFIXES, mesh_shape=(2, 4, 1), atol=2e-6)


def test_stage2_starts_from_an_exported_backbone(records, stage1, tmp_path):
  """A stage-2 backbone exported as a pretrained folder (what configs/demo_pretrain.py ships) is the
  start of the next stage 2, its positional table included (CogVideoX-5B-I2V's learned one, kept
  frozen as diffusers keeps it)."""
  align_dir = os.path.join(stage1, _semrepa.ALIGNMENT_DIRNAME)
  first = _config(records, tmp_path / "first", "finetune", 2, alignment_dir=align_dir)
  first.model.backbone.num_layers = 1
  first.model.backbone.use_learned_positional_embeddings = True
  first.model.backbone.max_text_seq_length = 0          # the records carry no text
  finetune.run(first)                                   # from scratch: only SAM/IDM come from stage 1
  dst = _semrepa.export_backbone(first, str(tmp_path / "backbone"))
  module, exported = load_pretrained(dst)
  assert type(module).__name__ == "CogVideoXTransformer3D"
  _, state = _restore(first.workdir)
  for col, tree in (("params", state["params"]["params"]), ("buffers", state["frozen"]["buffers"])):
    saved = traverse_util.flatten_dict(exported[col])
    trained = traverse_util.flatten_dict(tree["transformer"])
    assert saved.keys() == trained.keys()
    for k in saved:
      np.testing.assert_array_equal(np.asarray(saved[k]), np.asarray(trained[k]))

  second = _config(records, tmp_path / "second", "finetune", 1, alignment_dir=align_dir)
  second.model.pretrained_transformer = dst
  second.optimizer.learning_rate = 0.0                  # the step leaves the start untouched
  second.optimizer.ema_decay = 0.5                      # and the EMA starts from it, too
  finetune.run(second)
  _, state = _restore(second.workdir)
  for col, tree in (("params", state["params"]["params"]), ("buffers", state["frozen"]["buffers"])):
    for k, v in traverse_util.flatten_dict(exported[col]).items():
      np.testing.assert_array_equal(np.asarray(traverse_util.flatten_dict(tree["transformer"])[k]),
                                    np.asarray(v))
  ema = traverse_util.flatten_dict(state["ema"]["params"]["transformer"])
  for k, v in traverse_util.flatten_dict(exported["params"]).items():
    np.testing.assert_allclose(np.asarray(ema[k]), np.asarray(v), rtol=1e-6, atol=1e-7)
