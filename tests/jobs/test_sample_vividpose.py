"""The `sample` job with configs/sample_vividpose.py on a synthetic driving clip: a model_dir of the
tiny VividPose parts, ReferenceNet, VAE and CLIP encoder (tests/vividpose_models.py), skeleton
maps drawn from the clip's keypoints and dense maps of the reference identity's body in the clip's
motion (data_pipelines/dense_maps.py); the files it writes and its latents against the pipeline
called directly with the same seed; the one-line errors naming the config field."""
import json
import os

import jax
import numpy as np
import pytest
from PIL import Image

from configs import sample_vividpose
from data_pipelines import dense_maps, synthetic
from data_pipelines.poses import draw
from data_pipelines.poses.annotate import synthetic_keypoints
from sem_repa_jax.jobs import sample as sample_job
from sem_repa_jax.methods.vividpose.model import load_vividpose
from sem_repa_jax.models import load_pretrained
from sem_repa_jax.pipelines import vividpose as vp
from tests.methods.test_vividpose import _moved
from tests.vividpose_models import CFG, ID_DIM, convert_vae_and_clip, initial_variables, save_parts

H, W, FRAMES, STEPS, SEED = CFG.height, CFG.width, CFG.num_frames, 2, 3
DRIVING, REFERENCE = 5, 9         # synthetic clip seeds: the driving motion, the reference person


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("vividpose_models")
  _, variables, _, reference_vars = initial_variables()
  save_parts(root, _moved(variables), reference_vars)
  convert_vae_and_clip(root)
  return root


def _save_frames(folder, frames):
  os.makedirs(folder, exist_ok=True)
  for i, f in enumerate(frames):
    Image.fromarray(f).save(folder / f"frame_{i}.png")
  return str(folder)


def _inputs(tmp_path, frames=FRAMES + 1):
  """ref.png (the reference person), skeletons/ and dense/ of the driving clip, id.npy."""
  Image.fromarray(synthetic.render_clip(REFERENCE, 1, H, W).rgb[0]).save(tmp_path / "ref.png")
  clip = synthetic.render_clip(DRIVING, frames, H, W)
  skeletons = draw.draw_poses(synthetic_keypoints(clip.keypoints, H, W), H, W)
  dense = dense_maps.dense_maps(DRIVING, REFERENCE, frames, H, W)
  np.save(tmp_path / "id.npy", np.random.default_rng(0).standard_normal(ID_DIM).astype(np.float32))
  return (_save_frames(tmp_path / "skeletons", skeletons), _save_frames(tmp_path / "dense", dense),
          skeletons, dense)


def _config(tmp_path, model_dir, skeletons, dense):
  c = sample_vividpose.get_config()
  c.image, c.model_dir, c.workdir = str(tmp_path / "ref.png"), str(model_dir), str(tmp_path / "run")
  c.skeletons, c.dense_maps, c.id_embedding = skeletons, dense, str(tmp_path / "id.npy")
  c.height, c.width, c.num_frames, c.num_inference_steps = H, W, FRAMES, STEPS
  c.min_guidance_scale, c.max_guidance_scale, c.seed, c.progress_bar = 1.5, 2.5, SEED, False
  return c


def test_sample_writes_the_video_and_strip_and_equals_the_pipeline(model_dir, tmp_path):
  skel_dir, dense_dir, skeletons, dense = _inputs(tmp_path)
  sample_job.run(_config(tmp_path, model_dir, skel_dir, dense_dir))
  out = tmp_path / "run" / "samples"
  assert sorted(os.listdir(out)) == ["ref_0.latents.npy", "ref_0.mp4", "ref_0.png",
                                     "settings.json"]
  assert np.asarray(Image.open(out / "ref_0.png")).shape == (H, FRAMES * W, 3)
  assert os.path.getsize(out / "ref_0.mp4") > 0
  settings = json.loads((out / "settings.json").read_text())
  assert settings["pipeline"] == "vividpose" and settings["num_frames"] == FRAMES
  assert settings["id_embedding"] and settings["settings"]["tile_size"] == 14
  # The same sample in this process: the first FRAMES maps, the pipeline with the job's settings.
  model, variables = load_vividpose(*(str(model_dir / n) for n in
                                      ("unet", "pose_controller", "id_controller")))
  others = [x for n in ("reference_net", "vae", "image_encoder")
            for x in load_pretrained(str(model_dir / n))]
  pipe = vp.VividPosePipeline(model, variables, *others, progress=False)
  want = pipe(Image.open(tmp_path / "ref.png").convert("RGB"), skeletons[:FRAMES],
              dense[:FRAMES], np.load(tmp_path / "id.npy"), key=jax.random.key(SEED),
              decode=False, height=H, width=W, num_frames=FRAMES, num_inference_steps=STEPS,
              min_guidance_scale=1.5, max_guidance_scale=2.5)["latents"]
  got = np.load(out / "ref_0.latents.npy")
  print(f"job vs pipeline: max abs {np.abs(got - np.asarray(want)).max():.1e}")
  np.testing.assert_allclose(got, np.asarray(want), atol=1e-6)


def test_errors_name_the_field(model_dir, tmp_path):
  skel_dir, dense_dir, skeletons, _ = _inputs(tmp_path)
  _save_frames(tmp_path / "short", skeletons[:2])
  _save_frames(tmp_path / "square", np.zeros((FRAMES + 1, H, H, 3), np.uint8))
  np.save(tmp_path / "id7.npy", np.zeros(7, np.float32))
  cases = (({"reference_net_dir": str(tmp_path / "nope")},
            FileNotFoundError, "config.reference_net_dir = .*nope: no such folder"),
           ({"reference_net_dir": str(model_dir / "unet")},
            ValueError, "holds a converted 'svd-unet' model; expected a 'sd-unet' one"),
           ({"pose_controller_dir": str(model_dir / "id_controller")},
            ValueError, "expected a 'vividpose-pose-controller' one"),
           ({"skeletons": str(tmp_path / "nope")}, FileNotFoundError,
            "config.skeletons = .*nope: no such folder"),
           ({"dense_maps": str(tmp_path / "short")}, ValueError,
            "config.skeletons has 4 frames and config.dense_maps 2"),
           ({"dense_maps": str(tmp_path / "square")}, ValueError,
            r"config.dense_maps = .*square: 64x64 images; expected the frames' aspect 48x64"),
           ({"skeletons": "", "dense_maps": ""}, ValueError,
            "set config.skeletons and/or config.dense_maps"),
           ({"id_embedding": str(tmp_path / "nope.npy")}, FileNotFoundError,
            "config.id_embedding = .*nope.npy: no such .npy file"),
           ({"id_embedding": str(tmp_path / "id7.npy")}, ValueError,
            "id_embedding of 7 values: expected 16"))
  for change, error, message in cases:
    c = _config(tmp_path, model_dir, skel_dir, dense_dir)
    c.update(change)
    with pytest.raises(error, match=message):
      sample_job.run(c)
