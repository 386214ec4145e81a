"""The `sample` job with configs/sample_svd.py through `python -m sem_repa_jax.main`: tiny random
diffusers SVD U-Net / VAE and CLIP vision encoder converted through the CLI, sampled on CPU; the
files it writes, and its latents against SVDImageToVideo called directly with the same seed."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from configs import sample_svd
from sem_repa_jax.jobs import sample as sample_job
from sem_repa_jax.models import load_pretrained
from sem_repa_jax.pipelines import svd_i2v
from sem_repa_jax.pipelines.cogvideox_i2v import to_uint8
from tests.svd_models import FOLDERS, LATENT_CHANNELS, convert_tiny_svd

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
H, W, FRAMES, STEPS, SEED = 16, 24, 3, 2, 5


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("svd_models")
  convert_tiny_svd(root)
  return root


def _main(args):
  # This process's numerics (tests/conftest.py: its XLA_FLAGS and matmul precision), so that the
  # job and the in-process pipeline run the same programs.
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_DEFAULT_MATMUL_PRECISION="highest")
  return subprocess.run([sys.executable, "-m", "sem_repa_jax.main", "--config",
                         "configs/sample_svd.py"] + args, cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=600)


def test_sample_svd_through_main_writes_files_and_equals_the_pipeline(model_dir, tmp_path):
  image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (24, 36, 3), dtype=np.uint8))
  image.save(tmp_path / "face.png")
  fields = dict(height=H, width=W, num_frames=FRAMES, num_inference_steps=STEPS,
                min_guidance_scale=1.5, max_guidance_scale=2.5, fps=6, motion_bucket_id=100,
                noise_aug_strength=0.05, decode_chunk_size=2)
  r = _main([f"--config.image={tmp_path / 'face.png'}", f"--config.model_dir={model_dir}",
             f"--config.workdir={tmp_path / 'run'}", f"--config.seed={SEED}"]
            + [f"--config.{k}={v}" for k, v in fields.items()])
  assert r.returncode == 0, r.stderr[-3000:]
  assert "sample 1/1" in r.stderr          # the pipeline's progress bar
  out = tmp_path / "run" / "samples"
  assert sorted(os.listdir(out)) == ["face_0.latents.npy", "face_0.mp4", "face_0.png",
                                     "settings.json"]
  from data_pipelines.video import probe
  info = probe(str(out / "face_0.mp4"))
  assert (info.num_frames, info.height, info.width) == (FRAMES, H, W)
  strip = np.asarray(Image.open(out / "face_0.png"))
  assert strip.shape == (H, FRAMES * W, 3)
  latents = np.load(out / "face_0.latents.npy")
  assert latents.shape == (1, FRAMES, H // 2, W // 2, LATENT_CHANNELS)   # tiny VAE: 2x
  saved = json.load(open(out / "settings.json"))
  assert saved["pipeline"] == "svd_i2v"
  assert saved["settings"] == {**saved["settings"], **fields}
  assert saved["models"]["unet"] == str(model_dir / "unet")

  # The same seed through the pipeline in this process gives the same latents and frames.
  pipe = svd_i2v.SVDImageToVideo(*[x for name, _ in FOLDERS
                                   for x in load_pretrained(str(model_dir / name))], progress=False)
  want = pipe(Image.open(tmp_path / "face.png"), key=jax.random.key(SEED), **fields)
  err = float(np.abs(latents - np.asarray(want["latents"])).max())
  print(f"job vs pipeline latents: max abs difference {err:.2e} "
        f"(max |latent| {np.abs(latents).max():.2f})")
  assert err <= 1e-6, err   # the same programs on the same inputs: 0 when measured
  frames = to_uint8(want["video"])[0]
  assert np.abs(strip.astype(int) - np.concatenate(list(frames), axis=1).astype(int)).max() <= 1


def test_sample_svd_errors_name_the_input(model_dir, tmp_path):
  Image.new("RGB", (36, 24)).save(tmp_path / "face.png")
  c = sample_svd.get_config()
  c.workdir, c.model_dir, c.progress_bar = str(tmp_path / "run"), str(model_dir), False
  c.image = str(tmp_path / "missing.png")
  with pytest.raises(FileNotFoundError, match="config.image=.*missing.png.: no such image file"):
    sample_job.run(c)
  c.image = str(tmp_path / "face.png")
  c.vae_dir = str(tmp_path / "nowhere")
  with pytest.raises(FileNotFoundError, match=r"config.vae_dir = .*nowhere: no such folder \(write "
                                              r"it with `python -m conversion svd-vae"):
    sample_job.run(c)
  c.vae_dir, c.unet_dir = "", str(model_dir / "vae")
  with pytest.raises(ValueError, match="config.unet_dir = .*vae holds a converted 'svd-vae' model; "
                                       "expected a 'svd-unet' one"):
    sample_job.run(c)
  c.unet_dir, c.model_dir = "", str(tmp_path)
  with pytest.raises(FileNotFoundError, match="config.model_dir/unet = .*: no such folder"):
    sample_job.run(c)
  c.model_dir, c.height = str(model_dir), H + 1
  with pytest.raises(ValueError, match="multiples of the VAE's spatial compression 2"):
    sample_job.run(c)
  assert not os.path.exists(tmp_path / "run")   # nothing written before the inputs are good


def test_sample_svd_bad_config_is_one_line_through_main(tmp_path):
  r = _main([f"--config.workdir={tmp_path}", "--config.pipeline=svd", "--config.image=x.png"])
  assert r.returncode == 2
  assert r.stderr.strip().splitlines()[-1] == ("error: config.pipeline = 'svd': expected one of "
                                               "cogvideox_i2v, svd_i2v, stableanimator, vividpose")
  r = _main([f"--config.workdir={tmp_path}", "--config.decode_chunk_size=-1"])
  assert "error: config.decode_chunk_size = -1: expected 0" in r.stderr
