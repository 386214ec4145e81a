"""CLIP text tower and the two-tower `clip` kind: parity with transformers' CLIPModel
(get_text_features, get_image_features) through `python -m conversion clip`, both end-of-text
rules, with and without padding; the CLIP tokenizer."""
import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from conversion import clip as clip_conversion
from sem_repa_jax.models.encoders import clip_model, clip_text, tokenize
from sem_repa_jax.models.pretrained import load_pretrained
from tests import parity

VISION = dict(hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=2,
              patch_size=8, image_size=32, hidden_act="quick_gelu", layer_norm_eps=1e-5)
TEXT = dict(vocab_size=40, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
            num_attention_heads=2, max_position_embeddings=12, hidden_act="quick_gelu",
            layer_norm_eps=1e-5, bos_token_id=38, pad_token_id=1)
BOS, EOS = 38, 39            # <|endoftext|> is the largest id, as in the openai vocabulary
NEW_EOS = 5                  # a config's eos_token_id that is not the largest id
TEXT_FIELDS = {k: v for k, v in TEXT.items() if k not in ("bos_token_id", "pad_token_id")}


def tiny_clip(eos_token_id: int, seed: int = 0):
  """A randomized tiny transformers CLIPModel whose text config names `eos_token_id`."""
  torch.manual_seed(seed)
  config = transformers.CLIPConfig(
      text_config=dict(TEXT, eos_token_id=eos_token_id), vision_config=VISION, projection_dim=12)
  model = transformers.CLIPModel(config).eval()
  return parity.randomize(model, seed, norms_only=True, spread=0.5)


@pytest.fixture(scope="module", params=[2, NEW_EOS], ids=["eos2_argmax", "eos_first_match"])
def reference(request, tmp_path_factory):
  model = tiny_clip(request.param)
  src, dst = parity.round_trip(model, clip_conversion.KIND,
                               tmp_path_factory.mktemp(f"clip{request.param}"))
  return model, src, dst, request.param


def prompts(eos: int, pad: int):
  """(input_ids, attention_mask) (3, 12): <bos> tokens <eos> then `pad`, of lengths 12, 7 and 4;
  tokens lie in 6..37, so argmax finds <eos> only when it is the largest id."""
  rng = np.random.default_rng(1)
  ids = np.full((3, 12), pad, np.int64)
  mask = np.zeros((3, 12), np.int64)
  for row, n in enumerate((12, 7, 4)):
    ids[row, :n] = [BOS, *rng.integers(6, 38, n - 2), eos]
    mask[row, :n] = 1
  return ids, mask


def text_reference(model, ids, mask):
  with torch.no_grad():
    out = model.get_text_features(input_ids=torch.from_numpy(ids),
                                  attention_mask=None if mask is None else torch.from_numpy(mask))
    hidden = model.text_model(input_ids=torch.from_numpy(ids), attention_mask=(
        None if mask is None else torch.from_numpy(mask))).last_hidden_state
  return out.pooler_output.numpy(), hidden.numpy()


@pytest.mark.parametrize("with_mask", [False, True], ids=["no_mask", "padding_mask"])
def test_text_parity(reference, with_mask):
  model, _, dst, eos_token_id = reference
  module, variables = load_pretrained(dst)
  assert module.config.text.eos_token_id == eos_token_id
  # The legacy rule runs on openai-style ids (padded with <|endoftext|>, the largest id), the
  # other on ids padded with pad_token_id whose eos is not the largest id.
  ids, mask = prompts(EOS, EOS) if eos_token_id == 2 else prompts(NEW_EOS, 1)
  mask = mask if with_mask else None
  want, want_hidden = text_reference(model, ids, mask)
  text = jax.jit(lambda v, i, m: module.apply(v, i, m, method=lambda s, i, m: s.text_model(i, m)))
  got = text(variables, jnp.asarray(ids, jnp.int32), None if mask is None else jnp.asarray(mask))
  err = parity.max_abs_error(got["text_embeds"], want)
  err_hidden = parity.max_abs_error(got["last_hidden_state"], want_hidden)
  print(f"CLIP text eos_token_id={eos_token_id} mask={with_mask}: text_embeds max abs error "
        f"{err:.2e}, last_hidden_state {err_hidden:.2e}")
  assert err <= 1e-4 and err_hidden <= 1e-4
  assert got["text_embeds"].shape == (3, 12)
  if with_mask:   # the mask is applied: padded rows change, the end-of-text states do not
    unmasked = text(variables, jnp.asarray(ids, jnp.int32), None)
    padded = ~mask.astype(bool)
    assert np.abs(np.asarray(unmasked["last_hidden_state"] - got["last_hidden_state"]))[
        padded].max() > 1e-3
    assert parity.max_abs_error(unmasked["text_embeds"], got["text_embeds"]) <= 1e-6


def test_image_parity_and_logit_scale(reference):
  model, _, dst, _ = reference
  module, variables = load_pretrained(dst)
  pixels = np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype(np.float32)
  with torch.no_grad():
    want = model.get_image_features(torch.from_numpy(pixels.transpose(0, 3, 1, 2))).pooler_output
  got = jax.jit(lambda v, p: module.apply(v, p, method="image_features"))(variables, pixels)
  err = parity.max_abs_error(got, want.numpy())
  print(f"CLIP image_embeds max abs error {err:.2e}")
  assert err <= 1e-4 and got.shape == (2, 12)
  assert float(variables["params"]["logit_scale"]) == pytest.approx(model.logit_scale.item())


def test_eos_rules_pick_the_first_end_of_text():
  ids = jnp.asarray([[BOS, 7, EOS, EOS, EOS], [BOS, 30, 8, NEW_EOS, NEW_EOS]])
  # argmax: the first largest id, so <|startoftext|> where <|endoftext|> is not the largest.
  assert clip_text.eos_positions(ids, 2).tolist() == [2, 0]
  assert clip_text.eos_positions(ids, NEW_EOS).tolist() == [0, 3]    # first NEW_EOS
  assert clip_text.eos_positions(ids, EOS).tolist() == [2, 0]


def test_config_reading():
  full = transformers.CLIPConfig(text_config=dict(TEXT, eos_token_id=2), vision_config=VISION,
                                 projection_dim=12).to_dict()
  cfg = clip_model.config_from_transformers(full)
  assert cfg.text.projection_dim == cfg.vision.projection_dim == 12
  assert cfg.text.eos_token_id == 2 and cfg.text.max_position_embeddings == 12
  assert clip_model.config_from_dict(json.loads(json.dumps(dataclasses.asdict(cfg)))) == cfg
  legacy = dict(full, text_config_dict={"hidden_size": 8, "num_attention_heads": 2})
  assert clip_model.config_from_transformers(legacy).text == clip_text.CLIPTextConfig(
      hidden_size=8, num_attention_heads=2, projection_dim=12)
  alone = clip_text.config_from_transformers(transformers.CLIPTextConfig().to_dict())
  assert alone == clip_text.CLIPTextConfig()
  with pytest.raises(ValueError, match="config.json has no text_config entry"):
    clip_model.config_from_transformers({"vision_config": {}})
  with pytest.raises(ValueError, match=r"eos_token_id \[2, 3\]: expected one token id"):
    clip_text.config_from_transformers({"eos_token_id": [2, 3]})
  with pytest.raises(ValueError, match="CLIP text config has unknown fields \\['width'\\]"):
    clip_text.build({"width": 3})
  module = clip_text.build(dict(TEXT_FIELDS))
  with pytest.raises(ValueError, match=r"input_ids: expected \(batch, length <= 12\)"):
    module.init(jax.random.key(0), jnp.zeros((1, 13), jnp.int32))
  with pytest.raises(ValueError, match=r"attention_mask: expected shape \(1, 4\)"):
    module.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32), jnp.ones((1, 5)))


def test_conversion_errors_are_readable(tmp_path):
  src = tmp_path / "src"
  tiny_clip(2).save_pretrained(str(src))

  def corrupt(state):
    state["text_model.embeddings.position_ids"] = np.arange(12)[None]    # older checkpoints
    state["vision_model.embeddings.position_ids"] = np.arange(17)[None]
    del state["text_projection.weight"]
    state["text_model.encoder.layers.1.mlp.fc2.bias"] = np.zeros(5, np.float32)
    state["text_model.pooler.weight"] = np.zeros(16, np.float32)
  folder = parity.edited_copy(src, tmp_path / "corrupt", corrupt)
  e = parity.conversion_error(clip_conversion.KIND, folder, tmp_path / "out")
  msg = str(e)
  assert "missing: model parameter 'params/text_model/text_projection/kernel'" in msg
  assert "shape mismatch: source 'text_model.encoder.layers.1.mlp.fc2.bias'" in msg
  assert "unused source tensor 'text_model.pooler.weight'" in msg
  assert "position_ids" not in msg and len(e.problems) == 3

  def permuted(state):
    state["text_model.embeddings.position_ids"] = np.arange(12)[::-1][None].copy()
  folder = parity.edited_copy(src, tmp_path / "permuted", permuted)
  parity.conversion_error(clip_conversion.KIND, folder, tmp_path / "out",
                          match=r"text_model\.embeddings\.position_ids is not 0\.\.11")
  (tmp_path / "permuted" / "config.json").write_text('{"model_type": "clip_vision_model"}')
  parity.conversion_error(clip_conversion.KIND, folder, tmp_path / "out",
                          match="model_type 'clip_vision_model', expected 'clip'")


# A tiny CLIP BPE vocabulary (transformers' own CLIP tokenizer test); <|endoftext|> is the
# largest id, as in the openai vocabulary.
BPE_VOCAB = ["l", "o", "w", "e", "r", "s", "t", "i", "d", "n", "lo", "l</w>", "w</w>", "r</w>",
             "t</w>", "low</w>", "er</w>", "lowest</w>", "newer</w>", "wider", "<unk>",
             "<|startoftext|>", "<|endoftext|>"]
BPE_MERGES = ["#version: 0.2", "l o", "lo w</w>", "e r</w>"]


def write_tokenizer(folder):
  """A CLIP tokenizer folder (vocab.json + merges.txt, as the openai repositories ship them)."""
  folder.mkdir(parents=True, exist_ok=True)
  (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(BPE_VOCAB)}))
  (folder / "merges.txt").write_text("\n".join(BPE_MERGES) + "\n")
  return folder


def test_tokenize_clip_matches_transformers(tmp_path):
  write_tokenizer(tmp_path / "model" / "tokenizer")
  tok = tokenize.load_clip_tokenizer(str(tmp_path / "model"))   # found in tokenizer/
  ids, mask, truncated = tokenize.tokenize_clip(tok, ["lower newer", "low " * 12], max_length=10)
  # lo w er</w> n e w er</w> between <|startoftext|> (21) and <|endoftext|> (22), padded with 22.
  assert ids[0].tolist() == [21, 10, 2, 16, 9, 3, 2, 16, 22, 22]
  assert mask[0].tolist() == [True] * 9 + [False] and truncated == [False, True]
  assert ids[1].tolist() == [21] + [15] * 8 + [22] and mask[1].all()
  reference = transformers.CLIPTokenizer.from_pretrained(str(tmp_path / "model" / "tokenizer"))
  want = reference(["lower newer", "low " * 12], padding="max_length", max_length=10,
                   truncation=True, return_tensors="np")
  np.testing.assert_array_equal(ids, want["input_ids"])
  np.testing.assert_array_equal(mask, want["attention_mask"].astype(bool))
  # Pooling at the first <|endoftext|> with either rule, though the padding repeats it.
  assert clip_text.eos_positions(jnp.asarray(ids), 2).tolist() == [8, 9]
  assert clip_text.eos_positions(jnp.asarray(ids), 22).tolist() == [8, 9]
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="empty: no CLIP tokenizer files"):
    tokenize.load_clip_tokenizer(str(tmp_path / "empty"))


def test_vit_l14_maps_every_transformers_tensor():
  """At full size (meta tensors, abstract Flax shapes): every tensor of a CLIPModel with
  openai/clip-vit-large-patch14's config.json (legacy eos_token_id 2) maps."""
  from conversion.mapping import plan
  config = transformers.CLIPConfig(
      text_config=dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                       num_hidden_layers=12, projection_dim=768, bos_token_id=0, pad_token_id=1,
                       eos_token_id=2),
      vision_config=dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16,
                         num_hidden_layers=24, patch_size=14, projection_dim=768),
      projection_dim=768)
  with torch.device("meta"):
    model = transformers.CLIPModel(config)
  cfg = clip_model.config_from_transformers(config.to_dict())
  assert (cfg.text.eos_token_id, cfg.text.max_position_embeddings, cfg.vision.image_size) == (
      2, 77, 224)
  module = clip_model.CLIPModel(cfg)
  plan(parity.ShapeSource(model), clip_conversion.rules(cfg), clip_conversion.target_shapes(module),
       "clip-vit-large-patch14")   # raises if a tensor or a parameter is left over
