"""Job train_animator end to end on tiny random records, through main: the loss falls, resume is
bit-exact, the frozen U-Net parameters stay exactly the converted files', the exported folders
load, an SVD U-Net without the adapter starts it as copies of to_k / to_v, and the 8-device
sharded step (data x fsdp) equals the unsharded one."""
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from data_pipelines import records as records_lib
from sem_repa_jax.jobs import _records, train_animator
from sem_repa_jax.methods.stableanimator.objective import BATCH_FIELDS
from sem_repa_jax.models import load_pretrained
from sem_repa_jax.training.train_state import merge
from tests.stableanimator_models import (FRAMES, ID_DIM, LATENT, SIDE, UNET, WIDTH, convert_all,
                                         torch_models, training_config)

CLIPS = 4


def _record(i, rng):
  f32 = lambda *s: rng.standard_normal(s).astype(np.float32)
  # A learnable toy: the latents follow the reference and the pose images.
  ref = 0.5 * f32(SIDE, SIDE, LATENT)
  return {"schema_version": records_lib.SCHEMA_VERSION, "clip_id": f"c{i}", "caption": "",
          "num_frames": 8 * FRAMES, "fps": 7.0, "height": 8 * SIDE, "width": 8 * SIDE,
          "video_latents": np.repeat(ref[None], FRAMES, 0) + 0.1 * f32(FRAMES, SIDE, SIDE, LATENT),
          "reference_latents": ref * 0.18215, "clip_embeds": f32(WIDTH), "id_embeds": f32(ID_DIM),
          "pose_images": rng.integers(0, 256, (FRAMES, 8 * SIDE, 8 * SIDE, 3), np.uint8),
          "face_weight_masks": (rng.uniform(size=(FRAMES, SIDE, SIDE)) < 0.3).astype(np.uint8)}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  root = tmp_path_factory.mktemp("train_animator")
  path = str(root / "records" / "train-0-of-1.array_record")
  records_lib.write_record_file(path, _clips())
  models = torch_models()
  return root, os.path.dirname(path), models, convert_all(root, models)


def _metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def _converted_variables(dirs):
  tree = {}
  for field, path in dirs.items():
    _, v = load_pretrained(path)
    tree[field[:-len("_dir")]] = v["params"]
  return {"params": tree}


def _fixed_loss(c, variables, draws=8):
  model = train_animator.build_model(c)
  loss_fn = train_animator.make_loss_fn(model, train_animator.objective_config(c))
  batch = {k: np.stack([r[k] for r in _clips()]) for k in BATCH_FIELDS}
  keys = jax.random.split(jax.random.key(123), draws)
  losses = jax.jit(lambda v: jax.lax.map(lambda k: loss_fn(v, batch, k)[0], keys))(variables)
  return float(jnp.mean(losses))


def _clips():
  rng = np.random.default_rng(0)
  return [_record(i, rng) for i in range(CLIPS)]


def _restore(workdir):
  import orbax.checkpoint as ocp
  from sem_repa_jax.training import checkpoint
  step = checkpoint.Checkpointer(workdir).latest_step()
  mgr = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))
  return step, mgr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]


def test_trains_resumes_exactly_and_keeps_the_frozen_part(setup):
  root, records, _, dirs = setup
  c = training_config(root / "run", dirs, records, steps=12)
  c.optimizer.learning_rate = 1e-3
  c.checkpoint.every_steps = 6
  train_animator.run(c)                                    # checkpoints at 6 and 12
  _, uninterrupted = _restore(c.workdir)
  losses = [m["loss"] for m in _metrics(c.workdir)]
  assert len(losses) == 12 and np.all(np.isfinite(losses))
  assert {"edm_loss", "face_loss"} <= set(_metrics(c.workdir)[0])
  # The loss at fixed draws over the whole data set falls (the logged one is one batch, one draw).
  before = _fixed_loss(c, _converted_variables(dirs))
  after = _fixed_loss(c, merge(uninterrupted["params"], uninterrupted["frozen"]))
  assert after < 0.8 * before, (before, after)
  # "Kill" after step 6: drop the last checkpoint and run again; it resumes at step 6.
  shutil.rmtree(os.path.join(c.workdir, "checkpoints", "12"))
  train_animator.run(c)
  step, resumed = _restore(c.workdir)
  assert step == 12
  for x, y in zip(jax.tree.leaves(uninterrupted), jax.tree.leaves(resumed)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  # Frozen: bit-equal to the converted unet.pth; every trained U-Net parameter moved.
  _, unet = load_pretrained(dirs["unet_dir"])
  saved = traverse_util.flatten_dict(unet, sep="/")
  frozen = traverse_util.flatten_dict(resumed["frozen"], sep="/")
  assert frozen and all(k.startswith("params/unet/") for k in frozen)
  for k, v in frozen.items():
    np.testing.assert_array_equal(np.asarray(v), np.asarray(saved["params/" + k[12:]]))
  trained = traverse_util.flatten_dict(resumed["params"], sep="/")
  moved = [k for k, v in trained.items() if k.startswith("params/unet/")
           and not np.array_equal(np.asarray(v), np.asarray(saved["params/" + k[12:]]))]
  assert len(moved) > 0.9 * sum(k.startswith("params/unet/") for k in trained)
  # The export loads as the three converted kinds, with the trained arrays.
  module, exported = load_pretrained(os.path.join(c.workdir, "export", "unet"))
  assert module.config.extra_context_tokens == 4
  np.testing.assert_array_equal(
      np.asarray(exported["params"]["down_blocks_0"]["attentions_0"]["proj_in"]["kernel"]),
      np.asarray(resumed["params"]["params"]["unet"]["down_blocks_0"]["attentions_0"]["proj_in"]
                 ["kernel"]))
  for name in ("pose_net", "face_encoder"):
    load_pretrained(os.path.join(c.workdir, "export", name))


def test_svd_unet_without_adapter_starts_it_from_to_k_to_v(setup, tmp_path):
  from diffusers import UNetSpatioTemporalConditionModel
  from tests import parity
  root, records, _, dirs = setup
  plain = parity.randomize(UNetSpatioTemporalConditionModel(**UNET).eval(), seed=5)
  unet_dir = parity.convert_pretrained(plain, "svd-unet", tmp_path / "src", tmp_path / "unet")
  from sem_repa_jax.training import mesh as mesh_lib, optimizers, sharding
  from sem_repa_jax.training.train_state import frozen_outside, make_train_state
  c = training_config(tmp_path / "run", {"unet_dir": unet_dir}, records, steps=1)
  # The job's fresh state and its prepare step (training/fit.py's order), without a train step.
  model = train_animator.build_model(c)
  args = train_animator.init_args(model, _records.example_batch(
      _records.record_dataset(c, BATCH_FIELDS)))
  frozen = frozen_outside(jax.eval_shape(model.init, jax.random.key(0), *args), c.train.trainable)
  _, init = make_train_state(model.init, jax.random.key(0), *args,
                             tx=optimizers.make_optimizer(c.optimizer)[0],
                             mesh=mesh_lib.make_mesh(c), rules=sharding.axis_rules(c), rng=1,
                             frozen_prefixes=frozen)
  state = train_animator.prepare_state_fn(c)(init())
  attn = state.params["params"]["unet"]["down_blocks_0"]["attentions_0"][
      "transformer_blocks_0"]["attn2"]
  for g in "kv":
    np.testing.assert_array_equal(np.asarray(attn[f"to_{g}_id"]["kernel"]),
                                  np.asarray(attn[f"to_{g}"]["kernel"]))


def test_records_that_do_not_fit_the_model_are_one_error(setup, tmp_path):
  root, records, _, dirs = setup
  c = training_config(tmp_path / "run", dirs, records, steps=1)
  c.model.pose_net_dir = ""
  c.model.pose_net.downsample = (False, True, False, True, False, False, False, False)   # /4
  with pytest.raises(ValueError, match=r"pose_images .* compression 4"):
    train_animator.run(c)


def test_sharded_step_equals_unsharded(setup):
  from sem_repa_jax.training.train_state import frozen_outside
  from tests.sharded_step import assert_mesh_step_matches_single_device
  root, records, _, dirs = setup
  c = training_config("/unused", dirs, records, steps=1)
  c.data.batch_size = 4
  model = train_animator.build_model(c)
  loss_fn = train_animator.make_loss_fn(model, train_animator.objective_config(c))
  dataset = _records.record_dataset(c, BATCH_FIELDS)
  batch = next(iter(dataset))
  args = train_animator.init_args(model, _records.example_batch(dataset))
  frozen = frozen_outside(jax.eval_shape(model.init, jax.random.key(0), *args), c.train.trainable)
  c.optimizer.learning_rate = 1e-3
  # Adam's first step is lr * g / (|g| + eps): with the default eps a gradient element that is
  # ~1e-9 either way (reduction order differs across 8 devices) moves by +-lr. A large eps makes
  # the step a smooth function of the gradient, so the comparison tests the sharding, not a sign.
  c.optimizer.eps = 1e-2
  assert_mesh_step_matches_single_device(c, model.init, args, loss_fn, batch, frozen=frozen,
                                         mesh_shape=(2, 2, 2), atol=5e-6,
                                         prepare=train_animator.prepare_state_fn(c))


def test_trains_through_main_with_a_quiet_console(setup, tmp_path):
  """`python -m sem_repa_jax.main --config configs/stableanimator.py` as a user runs it, on one
  device: two steps, every loss term logged and finite, a checkpoint and the export written, and
  the console shows the job's lines, not library chatter."""
  import subprocess
  import sys
  root, records, _, dirs = setup
  workdir = tmp_path / "run"
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  args = [sys.executable, "-m", "sem_repa_jax.main", "--config", "configs/stableanimator.py",
          f"--config.workdir={workdir}", f"--config.data.records={records}",
          "--config.data.prefetch=0", "--config.train.num_steps=2", "--config.progress_bar=False",
          "--config.log_every_steps=1", "--config.checkpoint.async_save=False"]
  args += [f"--config.model.{field}={path}" for field, path in dirs.items()]
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  r = subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  metrics = _metrics(workdir)
  assert [m["step"] for m in metrics] == [1, 2]
  for m in metrics:
    assert all(np.isfinite(m[k]) for k in ("loss", "edm_loss", "face_loss"))
  assert _restore(workdir)[0] == 2
  assert sorted(os.listdir(workdir / "export")) == ["face_encoder", "pose_net", "unet"]
  console = r.stdout + r.stderr
  assert "orbax" not in console.lower() and "absl" not in console.lower(), console[-2000:]
