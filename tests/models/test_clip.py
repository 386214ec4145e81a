"""CLIP vision encoder and SVD's CLIP preprocessing: parity with transformers and diffusers."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from conversion import clip_vision
from sem_repa_jax.models.encoders import clip, clip_preprocess
from sem_repa_jax.models.pretrained import load_pretrained
from tests import parity

TINY = dict(hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=2,
            patch_size=8, image_size=32, projection_dim=12, hidden_act="gelu",
            layer_norm_eps=1e-5)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  torch.manual_seed(0)   # the default init leaves norms at (1, 0): randomize them to check them
  model = parity.randomize(transformers.CLIPVisionModelWithProjection(
      transformers.CLIPVisionConfig(**TINY)).eval(), norms_only=True, spread=0.5)
  return (model, *parity.round_trip(model, clip_vision.KIND, tmp_path_factory.mktemp("clip")))


def test_parity_all_outputs(reference):
  model, _, dst = reference
  module, variables = load_pretrained(dst)
  pixels = np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype(np.float32)
  with torch.no_grad():
    ref = model(torch.from_numpy(pixels.transpose(0, 3, 1, 2)), output_hidden_states=True)
    pooled = model.vision_model(torch.from_numpy(pixels.transpose(0, 3, 1, 2))).pooler_output
  got = jax.jit(module.apply)(variables, jnp.asarray(pixels))
  errs = {"last_hidden_state": np.abs(np.asarray(got["last_hidden_state"])
                                      - ref.last_hidden_state.numpy()).max(),
          "pooled": np.abs(np.asarray(got["pooled"]) - pooled.numpy()).max(),
          "image_embeds": np.abs(np.asarray(got["image_embeds"]) - ref.image_embeds.numpy()).max()}
  print("CLIP max abs error:", {k: f"{v:.2e}" for k, v in errs.items()})
  assert all(e <= 1e-4 for e in errs.values()), errs
  assert got["last_hidden_state"].shape == (2, 17, 16) and got["image_embeds"].shape == (2, 12)


def test_quick_gelu_and_presets():
  cfg = clip.config_from_transformers(
      transformers.CLIPVisionConfig(**dict(TINY, hidden_act="quick_gelu")).to_dict())
  assert cfg.hidden_act == "quick_gelu" and cfg.projection_dim == 12
  assert clip.PRESETS["vit-h-14"].hidden_size == 1280
  module = clip.CLIPVisionEncoder(cfg)
  boxed = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))["params"]
  assert boxed["layers"]["q_proj"]["kernel"].names == ("layers", "embed", "heads", "kv")
  assert boxed["layers"]["fc1"]["kernel"].names == ("layers", "embed", "mlp")
  with pytest.raises(ValueError, match=r"pixels: expected \(batch, 32, 32, 3\)"):
    module.init(jax.random.key(0), jnp.zeros((1, 3, 32, 32)))


def test_conversion_errors_are_readable(reference, tmp_path):
  _, src, _ = reference

  def corrupt(state):
    state["vision_model.embeddings.position_ids"] = np.arange(17)[None]   # old checkpoints
    del state["visual_projection.weight"]
    state["vision_model.encoder.layers.1.mlp.fc1.bias"] = np.zeros(5, np.float32)
    state["text_model.final_layer_norm.weight"] = np.zeros(16, np.float32)
  folder = parity.edited_copy(src, tmp_path / "corrupt", corrupt)
  e = parity.conversion_error(clip_vision.KIND, folder, tmp_path / "out")
  msg = str(e)
  assert "missing: model parameter 'params/visual_projection/kernel'" in msg
  assert "shape mismatch: source 'vision_model.encoder.layers.1.mlp.fc1.bias'" in msg
  assert "unused source tensor 'text_model.final_layer_norm.weight'" in msg
  assert "position_ids" not in msg and len(e.problems) == 3
  (tmp_path / "corrupt" / "config.json").write_text('{"model_type": "t5"}')
  parity.conversion_error(clip_vision.KIND, folder, tmp_path / "out",
                          match="model_type 't5', expected 'clip_vision_model'")


@pytest.mark.parametrize("height,width", [(96, 160), (20, 30)])
def test_svd_preprocessing_matches_diffusers(height, width):
  from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import (
      _resize_with_antialiasing)
  images = np.random.default_rng(1).uniform(-1, 1, (2, height, width, 3)).astype(np.float32)
  x = torch.from_numpy(images.transpose(0, 3, 1, 2))
  want = _resize_with_antialiasing(x, (32, 32))
  want = (want + 1.0) / 2.0
  processor = transformers.CLIPImageProcessor()   # SVD's feature_extractor: OpenAI CLIP mean/std
  want = processor(images=want, do_normalize=True, do_center_crop=False, do_resize=False,
                   do_rescale=False, return_tensors="np").pixel_values
  got = np.asarray(clip_preprocess.preprocess_for_clip(jnp.asarray(images), size=32))
  err = np.abs(got - want.transpose(0, 2, 3, 1)).max()
  print(f"SVD CLIP preprocessing {height}x{width} max abs error {err:.2e}")
  assert err <= 1e-5
