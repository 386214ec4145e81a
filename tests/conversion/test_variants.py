"""Weights variants: diffusers folders ship e.g. diffusion_pytorch_model.fp16.safetensors beside (or
instead of) the float32 file; `--variant fp16` reads those, no flag reads the files without one,
and a folder without the asked-for files is one readable error."""
import contextlib
import io
import os

import numpy as np
import pytest
import torch
from diffusers import CogVideoXTransformer3DModel
from flax import traverse_util

from conversion.__main__ import main as conversion_main
from conversion.safetensors_io import CheckpointError, SafetensorsCheckpoint, variant_of
from sem_repa_jax.models import load_pretrained
from tests import parity

TINY = dict(num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=3,
            time_embed_dim=24, text_embed_dim=20, num_layers=1, sample_width=8, sample_height=12,
            sample_frames=9, max_text_seq_length=5)


@pytest.mark.parametrize("name,variant", [
    ("diffusion_pytorch_model.safetensors", None),
    ("diffusion_pytorch_model.fp16.safetensors", "fp16"),
    ("diffusion_pytorch_model.fp16-00001-of-00002.safetensors", "fp16"),
    ("model-00002-of-00003.safetensors", None),
    ("diffusion_pytorch_model.safetensors.index.json", None),
    ("diffusion_pytorch_model.safetensors.index.fp16.json", "fp16"),
])
def test_variant_of_file_names(name, variant):
  assert variant_of(name) == variant


def tiny_transformer(folder, seed: int):
  """A randomized tiny CogVideoX transformer, saved as a diffusers folder at `folder`."""
  torch.manual_seed(0)
  model = parity.randomize(CogVideoXTransformer3DModel(**TINY).eval(), seed=seed)
  model.save_pretrained(str(folder))
  return model


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  """A diffusers folder with float32 weights in one file and fp16 weights sharded with an index."""
  src = tmp_path_factory.mktemp("variants") / "transformer"
  model = tiny_transformer(src, seed=3)
  state = {k: v.numpy().copy() for k, v in model.state_dict().items()}
  model.to(torch.float16).save_pretrained(str(src), variant="fp16", max_shard_size="20KB")
  names = sorted(os.listdir(src))
  assert "diffusion_pytorch_model.safetensors" in names
  assert "diffusion_pytorch_model.safetensors.index.fp16.json" in names
  assert sum(n.endswith(".fp16.safetensors") or ".fp16-" in n for n in names) > 1
  return src, state


def _flat(dst):
  _, variables = load_pretrained(str(dst))
  return {k: np.asarray(v) for k, v in traverse_util.flatten_dict(variables, sep="/").items()}


def test_default_reads_the_float32_file_and_fp16_the_variant_shards(folder, tmp_path):
  src, state = folder
  default = _flat(parity.convert("cogvideox-transformer", src, tmp_path / "f32"))
  fp16 = _flat(parity.convert("cogvideox-transformer", src, tmp_path / "f16", variant="fp16"))
  assert default.keys() == fp16.keys()
  kernel = "params/time_embedding/linear_1/kernel"
  want = state["time_embedding.linear_1.weight"].T
  np.testing.assert_array_equal(default[kernel], want)
  np.testing.assert_array_equal(fp16[kernel], want.astype(np.float16).astype(np.float32))
  assert any(not np.array_equal(default[k], fp16[k]) for k in default)   # really other files


def test_missing_variant_is_one_readable_error(folder, tmp_path):
  src, _ = folder
  with pytest.raises(CheckpointError, match=r"no weights of variant 'bf16'; it holds "
                                            r"\(no variant\), fp16 \(choose with --variant\)"):
    SafetensorsCheckpoint(str(src), "bf16")
  only_fp16 = tmp_path / "only_fp16"
  os.makedirs(only_fp16)
  for n in os.listdir(src):
    if "fp16" in n or n == "config.json":
      os.link(os.path.join(src, n), only_fp16 / n)
  err = io.StringIO()
  with contextlib.redirect_stderr(err):
    rc = conversion_main(["cogvideox-transformer", "--src", str(only_fp16),
                          "--dst", str(tmp_path / "out")])
  assert rc == 2
  assert "no weights without a variant; it holds fp16 (choose with --variant)" in err.getvalue()
  assert not os.path.exists(tmp_path / "out")


def test_variant_of_a_single_file_is_refused(folder):
  src, _ = folder
  with pytest.raises(CheckpointError, match="selects files in a model folder"):
    SafetensorsCheckpoint(os.path.join(src, "diffusion_pytorch_model.safetensors"), "fp16")
