import json
import os
import re
import subprocess
import sys

import pytest

from sem_repa_jax import config_checks, jobs
# The fixture of a tokenizer and a converted tiny T5.
from tests.jobs.test_encode_text import assets  # noqa: F401

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bogus_job_exits_nonzero_listing_jobs(tmp_path):
  r = subprocess.run([sys.executable, "-m", "sem_repa_jax.main", "--config", "configs/base.py",
                      "--config.job=bogus", f"--config.workdir={tmp_path}"],
                     cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert r.returncode != 0
  assert "unknown job 'bogus'" in r.stderr
  for name in jobs.available_jobs():
    assert name in r.stderr


@pytest.mark.parametrize("shape,devices,expected", [((-1, 1, 1), 8, (8, 1, 1)),
                                                    ((2, -1, 2), 8, (2, 2, 2)),
                                                    ((1, 8, 1), 8, (1, 8, 1))])
def test_mesh_shape_resolves(shape, devices, expected):
  assert config_checks.check_mesh_shape(shape, ("data", "fsdp", "tensor"), devices) == expected


@pytest.mark.parametrize("shape,msg", [((3, -1, 1), "does not divide"), ((2, 2, 1), "uses 4 devices"),
                                       ((-1, -1, 1), "at most one"), ((2, 2), "has 2 entries")])
def test_bad_mesh_shapes_are_explained(shape, msg):
  with pytest.raises(config_checks.ConfigError, match=msg):
    config_checks.check_mesh_shape(shape, ("data", "fsdp", "tensor"), 8)


def test_console_is_quiet_and_log_txt_has_every_record(assets, tmp_path):
  """A real job through the CLI: encode_text loads the converted T5 with Orbax (INFO records) and
  warns about a truncated prompt."""
  root, _ = assets
  prompts = tmp_path / "prompts.txt"
  prompts.write_text("a cat runs on the beach a dog runs on the beach a man walks in the rain\n"
                     "a dog runs\n")
  workdir = tmp_path / "work"
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  args = [sys.executable, "-m", "sem_repa_jax.main", "--config", "configs/encode_text.py",
          f"--config.workdir={workdir}", f"--config.encode_text.prompts={prompts}",
          f"--config.encode_text.tokenizer={root / 'tokenizer'}",
          f"--config.encode_text.text_encoder={root / 't5'}", "--config.encode_text.max_length=12",
          "--config.encode_text.storage_dtype=float32", "--config.progress_bar=False"]
  r = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr[-3000:]
  console = r.stdout + r.stderr
  assert "orbax" not in console.lower()
  assert "encode_text: 3 prompts, 3 unique" in console
  warning = "WARNING sem_repa_jax.jobs.encode_text: encode_text: prompt truncated to 12 tokens"
  assert warning in console
  assert len(console.splitlines()) <= 6, console

  lines = open(workdir / "log.txt").read().splitlines()
  orbax = [l for l in lines if " INFO p0 orbax.checkpoint" in l]
  assert orbax, "\n".join(lines)
  assert any(" WARNING p0 sem_repa_jax.jobs.encode_text:" in l and "truncated" in l for l in lines)
  assert any(" INFO p0 sem_repa_jax.main:" in l and "job encode_text" in l for l in lines)


def _main(args, tmp_path, env_extra=None):
  env = dict(os.environ, JAX_PLATFORMS="cpu", **(env_extra or {}))
  env.pop("XLA_FLAGS", None)
  return subprocess.run([sys.executable, "-m", "sem_repa_jax.main"] + args, cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("override,msg", [
    ("--config.checkpoint.keep=0", r"config.checkpoint.keep = 0: expected at least 1"),
    ("--config.dtype=bf16", r"config.dtype = 'bf16': expected one of float32, bfloat16, float16"),
    ("--config.data.batch_size=0", r"config.data.batch_size = 0: expected at least 1"),
    ("--config.align.num_steps=0", r"config.align.num_steps = 0: expected at least 1 \(0 would"),
])
def test_bad_values_are_refused_before_any_work(override, msg, tmp_path):
  workdir = tmp_path / "w"
  r = _main(["--config", "configs/semrepa.py", "--config.job=align", f"--config.workdir={workdir}",
             override], tmp_path)
  assert r.returncode == 2
  assert re.search("^error: " + msg, r.stderr, re.M), r.stderr[-2000:]
  assert not workdir.exists()                  # nothing written


def test_a_workdir_holding_another_jobs_run_is_refused(tmp_path):
  workdir = tmp_path / "stage1"
  os.makedirs(workdir / "checkpoints" / "12")
  (workdir / "config.json").write_text(json.dumps({"job": "align", "workdir": str(workdir)}))
  r = _main(["--config", "configs/semrepa.py", "--config.job=finetune",
             f"--config.workdir={workdir}"], tmp_path)
  assert r.returncode == 2
  assert (f"error: config.workdir {workdir} holds a run of job 'align' (its config.json and "
          "checkpoints/); give job 'finetune' its own workdir") in r.stderr
  assert json.loads((workdir / "config.json").read_text())["job"] == "align"   # not overwritten


def test_a_user_error_inside_a_job_is_one_line_and_the_traceback_is_in_the_log(tmp_path):
  workdir = tmp_path / "w"
  args = ["--config", "configs/semrepa.py", "--config.job=align", f"--config.workdir={workdir}",
          "--config.data.records="]
  r = _main(args, tmp_path)
  assert r.returncode == 2
  assert re.search(r"^error: config.data.records is empty", r.stderr, re.M), r.stderr[-2000:]
  assert "Traceback" not in r.stderr
  assert f"(traceback in {workdir}/log.txt" in r.stderr
  log = (workdir / "log.txt").read_text()
  assert "Traceback" in log and "config.data.records is empty" in log
  shown = _main(args, tmp_path, {"SEM_REPA_TRACEBACK": "1"})
  assert shown.returncode != 0 and "Traceback" in shown.stderr


def test_installed_commands_work_from_any_folder(tmp_path):
  """`./run.sh setup` installs the package editable: both commands run outside the repository."""
  bin_dir = os.path.dirname(sys.executable)
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  r = subprocess.run([os.path.join(bin_dir, "sem-repa"), "--config",
                      os.path.join(ROOT, "configs", "base.py"), "--config.job=bogus"],
                     cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
  assert r.returncode == 2 and "unknown job 'bogus'" in r.stderr, r.stderr[-2000:]
  r = subprocess.run([os.path.join(bin_dir, "sem-repa-convert"), "svd-unett", "--src", "x",
                      "--dst", "y"], cwd=tmp_path, env=env, capture_output=True, text=True,
                     timeout=120)
  assert r.returncode == 2 and "invalid choice: 'svd-unett'" in r.stderr, r.stderr[-2000:]
