"""The shared conversion driver: registry factories, config errors first, sources closed, casts."""
import json

import numpy as np
import pytest

from conversion import available_kinds, driver, t5_encoder
from conversion.mapping import ConversionError, DictSource, Rule
from sem_repa_jax.models import load_pretrained, registry
from sem_repa_jax.models.encoders import t5

TINY_T5 = t5.T5Config(vocab_size=8, d_model=4, d_kv=2, d_ff=6, num_layers=1, num_heads=2,
                      relative_attention_num_buckets=4, relative_attention_max_distance=8)


def test_every_kind_names_the_registry_factory():
  kinds = available_kinds()
  assert set(kinds) == {"cogvideox-transformer", "cogvideox-vae", "t5-encoder", "clip-vision",
                        "clip", "arcface", "svd-unet", "svd-vae", "lpips", "fid-inception",
                        "i3d", "raft", "pose-net", "face-encoder", "sd-unet"}
  for kind, mod in kinds.items():
    assert mod.FACTORY == registry.factory_of(kind)
  module = driver.build("t5-encoder", driver.standard_kwargs(TINY_T5, "bfloat16"))
  assert isinstance(module, t5.T5Encoder) and module.config == TINY_T5


def test_config_errors_come_before_tensors_and_name_config_json(tmp_path):
  src = tmp_path / "t5"
  src.mkdir()
  (src / "config.json").write_text(json.dumps({"model_type": "t5"}))
  # No *.safetensors in the folder: reading tensors first would raise a CheckpointError instead.
  with pytest.raises(ConversionError, match=r"config\.json: T5 config has no .vocab_size") as e:
    available_kinds()["t5-encoder"].convert(str(src), str(tmp_path / "out"))
  assert str(src) in str(e.value) and not (tmp_path / "out").exists()


class _Closing(DictSource):
  closed = False

  def close(self):
    self.closed = True


def _t5_rules(_config):
  return [Rule(r"(params/.*)", r"\1")]   # source names are the flat Flax paths


def test_convert_closes_its_source_and_keeps_float32_prefixes(tmp_path):
  module = t5.T5Encoder(TINY_T5)
  shapes = t5_encoder.target_shapes(module)
  arrays = {k: np.random.default_rng(0).standard_normal(s).astype(np.float32)
            for k, s in shapes.items()}
  bad = _Closing({**arrays, "stray": np.zeros(2, np.float32)})
  with pytest.raises(ConversionError, match="unused source tensor 'stray'"):
    driver.convert("bad", str(tmp_path / "bad"), kind="t5-encoder",
                   read=lambda s, variant: (bad, TINY_T5), rules=_t5_rules,
                   target_shapes=lambda m: shapes)
  assert bad.closed and not (tmp_path / "bad").exists()

  good = _Closing(arrays)
  dst = driver.convert("good", str(tmp_path / "good"), "bfloat16", kind="t5-encoder",
                       read=lambda s, variant: (good, TINY_T5), rules=_t5_rules,
                       target_shapes=lambda m: shapes, keep_float32=("params/layers/",))
  assert good.closed
  cfg = json.loads((tmp_path / "good" / "config.json").read_text())
  assert cfg["factory"] == registry.factory_of("t5-encoder")
  assert cfg["module_kwargs"]["param_dtype"] == "bfloat16"
  _, variables = load_pretrained(dst)
  p = variables["params"]
  assert str(p["layers"]["q"]["kernel"].dtype) == "float32"
  assert str(p["shared"]["embedding"].dtype) == "bfloat16"
  np.testing.assert_array_equal(p["layers"]["q"]["kernel"], arrays["params/layers/q/kernel"])
