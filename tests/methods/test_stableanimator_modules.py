"""Parity of StableAnimator's PoseNet and face encoder (FusionFaceId) with PyTorch references.

The references are the torch modules of benchmarks/stableanimator_torch.py, written from the
facts in porting-notes.md ("StableAnimator",
read from the official code), whose state_dict keys are the official names; every weight is
randomized (PoseNet's zero final_proj and scale 2.0 included), saved as a .pth state dict as users
download it, converted through `python -m conversion pose-net / face-encoder` and loaded with
load_pretrained. Float32, tolerance 1e-4.
"""
import flax.linen as nn_flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from benchmarks.stableanimator_torch import TorchFusionFaceId, TorchPoseNet
from sem_repa_jax.methods.stableanimator.conditioning import (stableanimator_conditioning,
                                                             stableanimator_context)
from sem_repa_jax.methods.stableanimator.face_encoder import FaceEncoderConfig, FusionFaceId
from sem_repa_jax.methods.stableanimator.posenet import PoseNet, PoseNetConfig
from sem_repa_jax.models import load_pretrained
from tests import parity

TOL = 1e-4


# 2 heads of 64, perceiver depth 4; the CLIP width is the context width, as in the official (1024)
FACE = dict(dim=128, id_dim=16, clip_dim=128)


def _save(model, path):
  torch.save(model.state_dict(), path)
  return str(path)


@pytest.fixture(scope="module")
def pose_net(tmp_path_factory):
  root = tmp_path_factory.mktemp("pose_net")
  # gain 2: nine layers deep, unit gain would leave outputs of ~0.07 (here std ~1)
  model = parity.randomize(TorchPoseNet(out_channels=32).eval(), seed=1, gain=2.0)
  src = _save(model, root / "pose_net.pth")
  return model, src, load_pretrained(parity.convert("pose-net", src, root / "dst"))


@pytest.fixture(scope="module")
def face_encoder(tmp_path_factory):
  root = tmp_path_factory.mktemp("face_encoder")
  model = parity.randomize(TorchFusionFaceId(**FACE).eval(), seed=2)
  src = _save(model, root / "face_encoder.pth")
  return model, src, load_pretrained(parity.convert("face-encoder", src, root / "dst"))


def test_pose_net_matches_the_official_layout(pose_net):
  model, _, (module, variables) = pose_net
  assert len(model.state_dict()) == 19
  assert module.config == PoseNetConfig(out_channels=32)
  pose = np.random.default_rng(0).uniform(-1, 1, (2, 3, 32, 40, 3)).astype(np.float32)
  out = np.asarray(jax.jit(module.apply)(variables, pose))
  with torch.no_grad():
    want = model(torch.from_numpy(pose).permute(0, 1, 4, 2, 3))
  want = want.unflatten(0, (2, 3)).permute(0, 1, 3, 4, 2).numpy()
  err = parity.max_abs_error(out, want)
  print(f"pose-net (2, 3, 32, 40) -> {out.shape}: max abs err {err:.2e} "
        f"(output max {np.abs(want).max():.2f})")
  assert out.shape == (2, 3, 4, 5, 32)
  assert err <= TOL


def test_pose_net_init_leaves_the_unet_unchanged():
  """final_proj zero and scale 2.0 at init (the official): the output is exactly zero. (Two convs:
  initializing eight takes 20 s of compilation on a loaded CPU.)"""
  module = PoseNet(PoseNetConfig(widths=(4, 8), downsample=(False, True), out_channels=8))
  pose = jnp.ones((1, 1, 4, 4, 3))
  v = nn_flax.meta.unbox(jax.jit(module.init)(jax.random.key(0), pose))
  assert float(v["params"]["scale"][0]) == 2.0
  assert not np.any(np.asarray(jax.jit(module.apply)(v, pose)))
  with pytest.raises(ValueError, match="multiples of 2"):
    module.apply(v, jnp.ones((1, 1, 3, 4, 3)))


def test_face_encoder_matches_the_official_layout(face_encoder):
  model, _, (module, variables) = face_encoder
  assert len(model.state_dict()) == 56   # as the released face_encoder.pth
  assert module.config == FaceEncoderConfig(id_embeddings_dim=16, proj_hidden_dim=32,
                                            cross_attention_dim=128, clip_embeddings_dim=128)
  r = np.random.default_rng(1)
  ids = (3.0 * r.standard_normal((3, 16))).astype(np.float32)   # raw ArcFace norms ~20
  clip = r.standard_normal((3, 1, 128)).astype(np.float32)
  out = np.asarray(jax.jit(module.apply)(variables, ids, clip))
  with torch.no_grad():
    want = model(torch.from_numpy(ids), torch.from_numpy(clip)).numpy()
  err = parity.max_abs_error(out, want)
  print(f"face-encoder -> {out.shape}: max abs err {err:.2e} (output max "
        f"{np.abs(want).max():.2f})")
  assert out.shape == (3, 4, 128)
  assert err <= TOL


def test_conditioning_is_clip_token_then_face_tokens(pose_net, face_encoder):
  pose_module, pose_vars = pose_net[2]
  face_module, face_vars = face_encoder[2]
  r = np.random.default_rng(2)
  clip = r.standard_normal((2, 128)).astype(np.float32)
  ids = r.standard_normal((2, 16)).astype(np.float32)
  pose = r.uniform(-1, 1, (2, 2, 16, 16, 3)).astype(np.float32)
  run = jax.jit(lambda pv, fv, c, i, p: stableanimator_conditioning(
      pose_module, pv, face_module, fv, clip_embeds=c, id_embeds=i, pose_images=p))
  context, features = (np.asarray(a) for a in run(pose_vars, face_vars, clip, ids, pose))
  assert context.shape == (2, 5, 128) and features.shape == (2, 2, 2, 2, 32)
  np.testing.assert_array_equal(context[:, 0], clip)
  np.testing.assert_allclose(context[:, 1:], face_module.apply(face_vars, ids, clip[:, None]),
                             atol=1e-5)
  np.testing.assert_allclose(features, pose_module.apply(pose_vars, pose), atol=1e-5)
  with pytest.raises(ValueError, match="face_tokens"):
    stableanimator_context(clip, np.zeros((2, 4, 64), np.float32))


def _error(kind, src, dst):
  e = parity.conversion_error(kind, src, dst)
  print(e)
  return e


def test_bad_checkpoints_are_one_error_and_write_nothing(pose_net, face_encoder, tmp_path):
  state = torch.load(pose_net[1], weights_only=True)
  state["conv_layers.4.bias"] = state["conv_layers.4.bias"][:8]
  state["extra.weight"] = torch.zeros(3)
  del state["scale"]
  e = _error("pose-net", _save_dict(state, tmp_path / "bad_pose.pth"), tmp_path / "o1")
  assert len(e.problems) == 3
  assert any("unused source tensor 'extra.weight'" in p for p in e.problems)
  assert any("shape mismatch: source 'conv_layers.4.bias'" in p for p in e.problems)
  assert any("missing: model parameter 'params/scale'" in p for p in e.problems)

  state = torch.load(face_encoder[1], weights_only=True)
  del state["fusion_model.layers.2.1.3.weight"]
  state["fusion_model.layers.1.0.to_k.weight"] = state.pop("fusion_model.layers.1.0.to_kv.weight")
  e = _error("face-encoder", _save_dict(state, tmp_path / "bad_face.pth"), tmp_path / "o2")
  assert len(e.problems) == 3   # the renamed tensor unused, two parameters missing
  msg = str(e)
  assert "unused source tensor 'fusion_model.layers.1.0.to_k.weight'" in msg
  assert "layers_2_ff/linear_2/kernel" in msg and "layers_1_attn/to_kv/kernel" in msg

  # Another file entirely: one error naming what was expected.
  e = parity.conversion_error("pose-net", face_encoder[1], tmp_path / "o3", match="no conv_layers")
  assert "pose_net.pth" in e.problems[0]


def _save_dict(state, path):
  torch.save(state, path)
  return str(path)
