"""Job train_vividpose end to end at the tiny preset: synthetic clips rendered in the official
layout with dense/ maps, annotated by configs/annotate_vividpose.py with tiny random teachers,
trained from a plain SVD U-Net folder and an SD U-Net folder (fresh controllers). The loss falls,
resume is bit-exact, the exact-SVD start holds (to_v_id zero), every exported network loads back by
kind, and a clip without dense maps is a one-line error naming it."""
import dataclasses
import json
import os
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from sem_repa_jax.jobs import annotate as annotate_job
from sem_repa_jax.jobs import train_vividpose
from sem_repa_jax.methods.vividpose.model import PRESETS, _TINY_SD, _TINY_SVD
from sem_repa_jax.models import load_pretrained, save_pretrained
from sem_repa_jax.models.sd import unet as sd_unet
from sem_repa_jax.models.svd import unet as svd_unet
from tests.data_pipelines import tiny_teachers

TINY = PRESETS["tiny"]
CLIPS, STEPS = 4, 16
WINDOW = 4      # loss windows: the first and the last WINDOW steps


def _annotate_config(root, teachers, clips=CLIPS, synthetic_root=None):
  from configs import annotate_vividpose
  c = annotate_vividpose.get_config()
  c.workdir, c.progress_bar, c.seed = str(root / "ann"), False, 2
  c.data.root = synthetic_root or str(root / "syn")
  c.data.synthetic_clips, c.data.num_frames = clips, TINY.num_frames
  for k, v in teachers.items():
    c.annotate[k] = v
  return c


def _saved(dst, kind, module, config, inputs):
  """A random `kind` folder of `module` (no compile: shapes by eval_shape, numpy draws)."""
  rng = np.random.default_rng(7)
  abstract = nn.unbox(jax.eval_shape(module.init, jax.random.key(0), *inputs))
  variables = jax.tree_util.tree_map_with_path(
      lambda p, a: (1.0 + 0.1 * rng.standard_normal(a.shape) if "scale" in str(p[-1])
                    else 0.05 * rng.standard_normal(a.shape)).astype(np.float32), abstract)
  save_pretrained(str(dst), kind=kind, module_kwargs=dict(config=dataclasses.asdict(config)),
                  variables=variables)
  return str(dst)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  root = tmp_path_factory.mktemp("train_vividpose")
  teachers = dict(vae_dir=tiny_teachers.svd_vae(str(root / "vae")),
                  clip_dir=tiny_teachers.clip_vision(str(root / "clip"),
                                                     TINY.unet.cross_attention_dim[0]),
                  arcface_dir=tiny_teachers.arcface(str(root / "arcface"),
                                                    TINY.id_controller.id_embeddings_dim))
  ann = _annotate_config(root, teachers)
  annotate_job.run(ann)
  # The starting folders: a plain SVD U-Net (no ID group) and an SD U-Net, as conversion writes.
  dirs = {"unet_dir": _saved(root / "svd_unet", "svd-unet", svd_unet.UNetSpatioTemporal(_TINY_SVD),
                             _TINY_SVD, tuple(svd_unet.example_inputs(_TINY_SVD).values())),
          "reference_net_dir": _saved(root / "sd_unet", "sd-unet",
                                      sd_unet.UNet2DConditionModel(_TINY_SD), _TINY_SD,
                                      tuple(sd_unet.example_inputs(_TINY_SD).values()))}
  return root, os.path.join(ann.workdir, "annotations", "records"), dirs, teachers


def training_config(workdir, records, dirs, steps=STEPS):
  from configs import vividpose_tiny
  c = vividpose_tiny.get_config()
  c.workdir, c.data.records, c.data.prefetch = str(workdir), records, 0
  c.train.num_steps, c.progress_bar, c.log_every_steps = steps, False, 1
  c.data.batch_size, c.mesh.shape = 4, (2, 2, 2)    # the 8 simulated devices
  c.checkpoint.async_save, c.checkpoint.every_steps = False, steps // 2
  c.optimizer.learning_rate = 1e-3
  c.objective.stratified_sigmas = True     # a less noisy logged loss
  for k, v in dirs.items():
    c.model[k] = v
  return c


def _losses(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line)["loss"] for line in f]


def _restore(workdir):
  import orbax.checkpoint as ocp
  from sem_repa_jax.training import checkpoint
  step = checkpoint.Checkpointer(workdir).latest_step()
  mgr = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))
  return step, mgr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]


@pytest.fixture(scope="module")
def trained(setup):
  root, records, dirs, _ = setup
  c = training_config(root / "run", records, dirs)
  state = train_vividpose.run(c)                  # checkpoints at STEPS / 2 and STEPS
  return c, state


def test_loss_falls_from_the_exact_svd_start(trained, setup):
  c, state = trained
  losses = _losses(c.workdir)
  assert len(losses) == STEPS and np.all(np.isfinite(losses))
  first, last = np.mean(losses[:WINDOW]), np.mean(losses[-WINDOW:])
  print(f"loss first {WINDOW} {first:.4f} last {WINDOW} {last:.4f}")
  assert last < 0.8 * first, (first, last)
  # Everything trains (the paper's end-to-end set) and the ID branch moved off its zero start.
  assert not jax.tree.leaves(state.frozen)
  flat = traverse_util.flatten_dict(jax.device_get(state.params), sep="/")
  assert {k.split("/")[1] for k in flat} == {"unet", "reference_net", "pose_controller",
                                            "id_controller"}
  to_v_id = [v for k, v in flat.items() if "/to_v_id/" in k]
  assert to_v_id and any(np.abs(v).max() > 0 for v in to_v_id)


def test_prepare_loads_the_folders_and_keeps_the_id_group(setup):
  """A plain SVD U-Net folder fills every U-Net place but the ID group's to_k_id / to_v_id, which
  keep the state's values (at init: to_v_id zero, tests/methods/test_vividpose.py: exactly SVD).
  The state is filled with ones instead of initialized, to tell kept from loaded."""
  from sem_repa_jax.jobs import _records
  from sem_repa_jax.training import mesh as mesh_lib, optimizers, sharding
  from sem_repa_jax.training.train_state import make_train_state
  root, records, dirs, _ = setup
  c = training_config(root / "unused", records, dirs, steps=2)
  nets = train_vividpose.build_networks(c)
  fields = train_vividpose.batch_fields(train_vividpose.train_animator.objective_config(c))
  args = train_vividpose.init_args(nets, _records.example_batch(
      _records.record_dataset(c, fields)))
  ones = lambda key, *a: jax.tree.map(lambda s: jnp.ones(s.shape, s.dtype),
                                      jax.eval_shape(nets.init, key, *a))
  _, init = make_train_state(ones, jax.random.key(0), *args,
                             tx=optimizers.make_optimizer(c.optimizer)[0],
                             mesh=mesh_lib.make_mesh(c), rules=sharding.axis_rules(c), rng=1)
  state = train_vividpose.prepare_state_fn(c)(init())
  flat = traverse_util.flatten_dict(jax.device_get(state.params), sep="/")
  kept = {k for k in flat if "/to_k_id/" in k or "/to_v_id/" in k}
  assert kept and all(np.all(flat[k] == 1) for k in kept)
  loaded = set()
  for field, name in (("unet_dir", "unet"), ("reference_net_dir", "reference_net")):
    saved = traverse_util.flatten_dict(load_pretrained(dirs[field])[1], sep="/")
    for k, v in saved.items():
      loaded.add(f"params/{name}/{k[len('params/'):]}")
      np.testing.assert_array_equal(flat[f"params/{name}/{k[len('params/'):]}"], v)
  # Everything else (the fresh controllers) keeps the state's ones.
  assert {k.split("/")[1] for k in set(flat) - loaded - kept} == {"pose_controller",
                                                                 "id_controller"}


def test_resume_is_bit_exact(trained):
  c, _ = trained
  _, uninterrupted = _restore(c.workdir)
  # "Kill" after step STEPS / 2: drop the last checkpoint and run again; it resumes there.
  shutil.rmtree(os.path.join(c.workdir, "checkpoints", str(STEPS)))
  train_vividpose.run(c)
  step, resumed = _restore(c.workdir)
  assert step == STEPS
  a, b = jax.tree.leaves(uninterrupted), jax.tree.leaves(resumed)
  assert len(a) == len(b) > 0
  for x, y in zip(a, b):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_export_loads_back_by_kind(trained):
  from sem_repa_jax.methods.vividpose.model import load_vividpose
  c, state = trained
  root = os.path.join(c.workdir, "export")
  assert sorted(os.listdir(root)) == ["id_controller", "pose_controller", "reference_net", "unet"]
  params = jax.device_get(state.params)["params"]
  model, variables = load_vividpose(*(os.path.join(root, n)
                                      for n in ("unet", "pose_controller", "id_controller")))
  assert model.unet_config.extra_context_tokens == TINY.unet.extra_context_tokens
  module, ref = load_pretrained(os.path.join(root, "reference_net"))
  assert module.config == _TINY_SD
  for name, tree in (*variables["params"].items(), ("reference_net", ref["params"])):
    for x, y in zip(jax.tree.leaves(tree), jax.tree.leaves(params[name])):
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_a_clip_without_dense_maps_is_a_one_line_error(setup, tmp_path):
  from data_pipelines import synthetic
  root, _, _, teachers = setup
  syn = str(tmp_path / "syn")
  ids = synthetic.write_official_dataset(syn, 2, TINY.num_frames, TINY.height, TINY.width,
                                         seed=2, dense=True)
  sub, name = ids[1].split("_", 1)
  shutil.rmtree(os.path.join(syn, sub, name, "dense"))
  c = _annotate_config(tmp_path, teachers, clips=2, synthetic_root=syn)
  with pytest.raises(ValueError, match=rf"clip {ids[1]}: no dense maps .*dense") as e:
    annotate_job.run(c)
  assert "\n" not in str(e.value)
