"""The `sample` job with configs/sample_stableanimator.py through `python -m sem_repa_jax.main`: a
model_dir of tiny random networks converted through the CLI (tests/stableanimator_models.py),
driving keypoints aligned onto the reference's and drawn, HJB on with face masks; the files it
writes and its latents against the pipeline called directly with the same seed and inputs."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from data_pipelines.poses import align, draw
from data_pipelines.poses.keypoints import PoseKeypoints, save_keypoints
from sem_repa_jax.diffusion.hjb import HJBConfig
from sem_repa_jax.methods.stableanimator.model import load_stableanimator
from sem_repa_jax.models import load_pretrained
from sem_repa_jax.pipelines import stableanimator as sa
from tests.stableanimator_models import ID_DIM, inference_models

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIDE, FRAMES, STEPS, SEED = 64, 5, 2, 3


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("stableanimator_models")
  inference_models(root)
  return root


def _keypoints(rng, frames=None, scale=1.0):
  lead = () if frames is None else (frames,)
  body = 0.5 + scale * (rng.uniform(-0.3, 0.3, (18, 2)) + rng.uniform(-0.02, 0.02, lead + (18, 2)))
  return PoseKeypoints(body=body, body_scores=np.ones(lead + (18,)),
                       hands=np.zeros(lead + (2, 21, 2)), hand_scores=np.zeros(lead + (2, 21)),
                       face=np.zeros(lead + (68, 2)), face_scores=np.zeros(lead + (68,)))


def _inputs(tmp_path):
  rng = np.random.default_rng(0)
  Image.fromarray(rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)).save(tmp_path / "ref.png")
  ref, drv = _keypoints(rng), _keypoints(rng, FRAMES + 2, scale=0.6)
  save_keypoints(str(tmp_path / "ref.npz"), ref)
  save_keypoints(str(tmp_path / "drv.npz"), drv)
  np.save(tmp_path / "id.npy", rng.standard_normal(ID_DIM).astype(np.float32))
  os.makedirs(tmp_path / "masks")
  masks = np.zeros((FRAMES + 2, SIDE, SIDE), np.uint8)
  masks[:, 10:30, 20:44] = 255
  for i, m in enumerate(masks):
    Image.fromarray(m).save(tmp_path / "masks" / f"frame_{i}.png")
  ref_mask = np.zeros((SIDE, SIDE), np.uint8)
  ref_mask[8:28, 18:40] = 255
  Image.fromarray(ref_mask).save(tmp_path / "ref_mask.png")
  return ref, drv, masks[:FRAMES], ref_mask


def test_sample_through_main_aligns_poses_runs_hjb_and_equals_the_pipeline(model_dir, tmp_path):
  ref, drv, masks, ref_mask = _inputs(tmp_path)
  fields = dict(height=SIDE, width=SIDE, num_frames=FRAMES, num_inference_steps=STEPS,
                min_guidance_scale=2.0, max_guidance_scale=2.0)
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_DEFAULT_MATMUL_PRECISION="highest")
  args = [f"--config.image={tmp_path / 'ref.png'}", f"--config.model_dir={model_dir}",
          f"--config.poses={tmp_path / 'drv.npz'}",
          f"--config.reference_keypoints={tmp_path / 'ref.npz'}",
          f"--config.id_embedding={tmp_path / 'id.npy'}", f"--config.workdir={tmp_path / 'run'}",
          f"--config.seed={SEED}", "--config.hjb.enabled=True", "--config.hjb.last_step=1",
          "--config.hjb.iterations=2", f"--config.face_masks={tmp_path / 'masks'}",
          f"--config.reference_face_mask={tmp_path / 'ref_mask.png'}"]
  r = subprocess.run([sys.executable, "-m", "sem_repa_jax.main", "--config",
                      "configs/sample_stableanimator.py"] + args
                     + [f"--config.{k}={v}" for k, v in fields.items()],
                     cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  out = tmp_path / "run" / "samples"
  assert sorted(os.listdir(out)) == ["ref_0.latents.npy", "ref_0.mp4", "ref_0.png",
                                     "settings.json"]
  settings = json.loads((out / "settings.json").read_text())
  assert settings["pipeline"] == "stableanimator" and settings["num_frames"] == FRAMES
  assert settings["settings"]["hjb"]["iterations"] == 2
  # The same run in this process: aligned skeletons, the pipeline with the job's settings.
  poses = draw.draw_poses(align.align_to_reference(ref, drv), SIDE, SIDE)[:FRAMES]
  model, variables = load_stableanimator(*(str(model_dir / n) for n in
                                           ("unet", "pose_net", "face_encoder")))
  loaded = [x for n in ("vae", "image_encoder", "arcface") for x in load_pretrained(
      str(model_dir / n))]
  pipe = sa.StableAnimatorPipeline(model, variables, *loaded, progress=False)
  want = pipe(Image.open(tmp_path / "ref.png").convert("RGB"), poses,
              np.load(tmp_path / "id.npy"), key=jax.random.key(SEED), face_masks=masks,
              reference_face_mask=ref_mask, decode=False,
              hjb=HJBConfig(last_step=1, iterations=2), **fields)["latents"]
  np.testing.assert_allclose(np.load(out / "ref_0.latents.npy"), np.asarray(want), atol=1e-4)


def test_hjb_without_masks_is_a_one_line_error(model_dir, tmp_path):
  from configs import sample_stableanimator
  from sem_repa_jax.jobs import sample as sample_job
  _inputs(tmp_path)
  c = sample_stableanimator.get_config()
  c.image, c.model_dir = str(tmp_path / "ref.png"), str(model_dir)
  c.poses = str(tmp_path / "drv.npz")
  c.workdir, c.height, c.width, c.hjb.enabled = str(tmp_path / "run"), SIDE, SIDE, True
  with pytest.raises(ValueError, match="hjb.enabled needs config.face_masks"):
    sample_job.run(c)
  c.hjb.enabled, c.poses = False, str(tmp_path / "masks")
  c.reference_keypoints = str(tmp_path / "ref.npz")
  with pytest.raises(ValueError, match="reference_keypoints aligns keypoints"):
    sample_job.run(c)


def test_reference_embedding_is_the_raw_arcface_of_the_detected_aligned_face(model_dir, tmp_path):
  from sem_repa_jax.jobs._sample_stableanimator import reference_id_embedding
  from sem_repa_jax.models.encoders import face_align
  from sem_repa_jax.models.encoders.face_detect import SCRFD, GivenFaces
  from tests.models.test_arcface_faces import write_scrfd_stub
  detector = SCRFD(write_scrfd_stub(tmp_path / "det.onnx"))
  image = np.random.default_rng(4).integers(0, 256, (64, 64, 3), dtype=np.uint8)
  module, variables = load_pretrained(str(model_dir / "arcface"))
  got = reference_id_embedding(image, detector, (module, variables))
  det = detector.detect(image)
  j = det.best(image.shape)
  face = face_align.norm_crop(image[None].astype(np.float32), det.landmarks[j][None])
  want = module.apply(variables, (np.asarray(face) - 127.5) / 127.5)[0]
  np.testing.assert_allclose(got, np.asarray(want), atol=1e-4)
  assert abs(np.linalg.norm(got) - 1) > 1e-3                    # raw, not L2-normalized
  assert reference_id_embedding(image, GivenFaces([None]), (module, variables)) is None
