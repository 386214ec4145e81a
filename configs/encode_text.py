"""Precompute T5 prompt embeddings once per unique prompt (job: encode_text).

  python -m sem_repa_jax.main --config configs/encode_text.py \\
    --config.encode_text.prompts=data/captions.jsonl \\
    --config.encode_text.tokenizer=weights/CogVideoX-5b-I2V/tokenizer \\
    --config.encode_text.text_encoder=converted/t5-xxl \\
    --config.dtype=bfloat16 --config.param_dtype=bfloat16
"""
import ml_collections

from configs import base


def get_config() -> ml_collections.ConfigDict:
  c = base.get_config()
  c.job = "encode_text"
  c.workdir = "runs/encode_text"
  e = c.encode_text = ml_collections.ConfigDict()
  e.prompts = ""               # one prompt per line (.txt) or a JSONL manifest (.jsonl)
  e.caption_field = "caption"  # the JSONL field holding the prompt
  e.tokenizer = ""             # folder with the T5 tokenizer (CogVideoX's tokenizer/)
  e.text_encoder = ""          # folder written by `python -m conversion t5-encoder`
  e.output = ""                # default: next to the prompts file, <stem>.t5_embeddings/
  e.max_length = 226           # CogVideoX's max_sequence_length
  e.attention_mask = False     # CogVideoX runs T5 on the padded tokens without a mask
  e.include_empty_prompt = True   # "" is CogVideoX's negative prompt and the text-dropout input
  e.batch_size = 8             # rounded up to a multiple of the local device count
  e.shard_size = 1024          # prompts per stored shard (what an interruption can lose)
  e.storage_dtype = "bfloat16"   # float32, bfloat16 or float16
  return c
