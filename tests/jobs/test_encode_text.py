"""encode_text job end to end: tokenizer, converted tiny T5, cache, resume, reader; vs transformers."""
import json
import os

import numpy as np
import pytest
import torch
import transformers

from configs import encode_text as encode_text_config
from conversion import t5_encoder
from sem_repa_jax.jobs import encode_text
from sem_repa_jax.models.encoders import text_cache
from sem_repa_jax.models.encoders.tokenize import load_t5_tokenizer, tokenize

WORDS = ["▁", "▁a", "▁cat", "▁dog", "▁runs", "▁on", "▁the", "▁beach", "▁man", "▁walks", "▁in",
         "▁rain", "▁woman", "▁dances"] + list("abcdeghiklmnorstuwxy")
TINY = dict(vocab_size=40, d_model=16, d_kv=8, d_ff=24, num_layers=2, num_heads=2,
            relative_attention_num_buckets=8, relative_attention_max_distance=16,
            feed_forward_proj="gated-gelu", dropout_rate=0.0)
MAX_LENGTH = 12


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
  root = tmp_path_factory.mktemp("encode_text")
  vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [(w, -1.0 - i) for i, w in
                                                            enumerate(WORDS)]
  transformers.T5TokenizerFast(vocab=vocab, extra_ids=0).save_pretrained(str(root / "tokenizer"))
  torch.manual_seed(0)
  model = transformers.T5EncoderModel(transformers.T5Config(**TINY)).eval()
  model.save_pretrained(str(root / "t5_src"))
  t5_encoder.convert(str(root / "t5_src"), str(root / "t5"))
  return root, model


def _config(root, prompts, **overrides):
  c = encode_text_config.get_config()
  c.workdir = str(root / "work")
  c.progress_bar = False
  e = c.encode_text
  e.prompts, e.tokenizer, e.text_encoder = str(prompts), str(root / "tokenizer"), str(root / "t5")
  e.max_length, e.batch_size, e.shard_size, e.storage_dtype = MAX_LENGTH, 3, 2, "float32"
  for k, v in overrides.items():
    setattr(e, k, v)
  return c


def test_tokenizer_round_trip(assets):
  root, _ = assets
  tok = load_t5_tokenizer(str(root / "tokenizer"))
  prompts = ["a cat runs on the beach", "a woman dances in the rain and a man walks on the beach"]
  ids, mask, truncated = tokenize(tok, prompts, MAX_LENGTH)
  assert ids.shape == (2, MAX_LENGTH) and ids.dtype == np.int32
  assert truncated == [False, True]
  n = int(mask[0].sum())
  assert ids[0, n - 1] == tok.eos_token_id and (ids[0, n:] == tok.pad_token_id).all()
  assert ids[1, -1] == tok.eos_token_id and mask[1].all()   # truncation keeps </s>, like HF
  assert tok.decode(ids[0], skip_special_tokens=True) == prompts[0]
  with pytest.raises(FileNotFoundError, match="tokenizer folder"):
    load_t5_tokenizer(str(root / "nope"))


def test_spiece_model_folder_like_cogvideox(tmp_path):
  """CogVideoX ships tokenizer/spiece.model (no tokenizer.json): it must load and agree with
  sentencepiece itself."""
  import io
  import sentencepiece as spm
  text = ["a man walks on the beach at sunset", "a woman dances in the rain",
          "the cat runs after a dog", "two people talk in a small room"] * 20
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(sentence_iterator=iter(text), model_writer=model, vocab_size=60,
                                 model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                 hard_vocab_limit=False, minloglevel=2)
  (tmp_path / "spiece.model").write_bytes(model.getvalue())
  (tmp_path / "tokenizer_config.json").write_text(json.dumps(
      {"tokenizer_class": "T5Tokenizer", "extra_ids": 0, "model_max_length": 226}))
  tok = load_t5_tokenizer(str(tmp_path))
  sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
  prompts = ["a man walks in the rain", "zebra!"]
  ids, mask, _ = tokenize(tok, prompts)
  assert ids.shape == (2, 226)
  for row, m, prompt in zip(ids, mask, prompts):
    assert row[m].tolist() == sp.encode(prompt) + [1] and (row[~m] == 0).all()


def test_encode_store_resume_and_read(assets, tmp_path):
  root, model = assets
  manifest = tmp_path / "captions.jsonl"
  captions = ["a cat runs on the beach", "a dog runs", "a cat runs on the beach",
              "a man walks in the rain", "a woman dances"]
  manifest.write_text("".join(json.dumps({"caption": c, "video": f"{i}.mp4"}) + "\n"
                              for i, c in enumerate(captions)))
  encode_text.run(_config(root, manifest))
  out = text_cache.default_cache_path(str(manifest))
  assert out == str(tmp_path / "captions.t5_embeddings")
  shards = sorted(os.listdir(out))
  assert len(shards) == 3 and all(s.startswith("embeddings-") for s in shards)   # 5 prompts, 2/shard

  store = encode_text.load_text_embeddings(out)
  assert len(store) == 5 and "" in store   # 4 unique captions + the empty prompt
  tok = load_t5_tokenizer(str(root / "tokenizer"))
  worst = 0.0
  for prompt in ["", *dict.fromkeys(captions)]:
    ids = tok(prompt, padding="max_length", max_length=MAX_LENGTH, truncation=True,
              return_tensors="pt").input_ids
    with torch.no_grad():
      want = model(ids).last_hidden_state[0].numpy()
    got = store.lookup(prompt)
    assert got.shape == (MAX_LENGTH, TINY["d_model"]) and got.dtype == np.float32
    worst = max(worst, float(np.abs(got - want).max()))
  print(f"encode_text cache vs transformers max abs error {worst:.2e}")
  assert worst <= 1e-4
  assert store.num_tokens("a dog runs") == len(tok("a dog runs").input_ids)
  with pytest.raises(text_cache.TextCacheError, match="is not stored"):
    store.lookup("a dog walks")

  # Resume: only the new prompt is encoded, into one new shard; old shards stay untouched.
  before = {s: os.path.getmtime(os.path.join(out, s)) for s in shards}
  with open(manifest, "a") as f:
    f.write(json.dumps({"caption": "a dog walks"}) + "\n")
  encode_text.run(_config(root, manifest))
  after = sorted(os.listdir(out))
  assert len(after) == 4 and all(os.path.getmtime(os.path.join(out, s)) == t
                                 for s, t in before.items())
  assert len(text_cache.load_text_embeddings(out)) == 6
  from safetensors import safe_open
  with safe_open(os.path.join(out, after[-1]), framework="np") as f:
    assert list(f.keys()) == [text_cache.prompt_key("a dog walks")]

  # Other settings on the same folder are refused instead of mixing embeddings.
  with pytest.raises(text_cache.TextCacheError, match="other settings"):
    encode_text.run(_config(root, manifest, storage_dtype="bfloat16"))


def test_bfloat16_storage_from_text_file(assets, tmp_path):
  root, _ = assets
  prompts = tmp_path / "prompts.txt"
  prompts.write_text("a cat runs\n\na cat runs\n")
  encode_text.run(_config(root, prompts, storage_dtype="bfloat16", include_empty_prompt=False,
                          output=str(tmp_path / "cache")))
  store = text_cache.load_text_embeddings(str(tmp_path / "cache"))
  assert len(store) == 1 and str(store.lookup("a cat runs").dtype) == "bfloat16"


def test_config_passes_checks_and_kinds_are_registered():
  from conversion import available_kinds
  from sem_repa_jax import config_checks
  config_checks.check_config(encode_text_config.get_config(), 8)
  assert {"t5-encoder", "clip-vision"} <= set(available_kinds())


def test_bad_manifest_names_the_line(tmp_path):
  bad = tmp_path / "bad.jsonl"
  bad.write_text(json.dumps({"caption": "ok"}) + "\n" + json.dumps({"text": "no caption"}) + "\n")
  with pytest.raises(ValueError, match=r"bad.jsonl:2: no 'caption' field"):
    encode_text.read_prompts(str(bad))
  bad.write_text("{not json\n")
  with pytest.raises(ValueError, match=r"bad.jsonl:1: not valid JSON"):
    encode_text.read_prompts(str(bad))
