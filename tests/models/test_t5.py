"""T5 v1.1 encoder: parity with transformers' T5EncoderModel through the real conversion path."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from conversion import t5_encoder
from sem_repa_jax.models.encoders import t5
from sem_repa_jax.models.pretrained import load_pretrained
from tests import parity

TINY = dict(vocab_size=64, d_model=16, d_kv=8, d_ff=24, num_layers=2, num_heads=2,
            relative_attention_num_buckets=8, relative_attention_max_distance=16,
            feed_forward_proj="gated-gelu", layer_norm_epsilon=1e-6, dropout_rate=0.0)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  torch.manual_seed(0)   # the default init leaves norms at 1: randomize them to check them
  model = parity.randomize(transformers.T5EncoderModel(transformers.T5Config(**TINY)).eval(),
                           norms_only=True, spread=0.3)
  return (model, *parity.round_trip(model, t5_encoder.KIND, tmp_path_factory.mktemp("t5")))


def test_relative_position_buckets_match_transformers():
  from transformers.models.t5.modeling_t5 import T5Attention
  for buckets, distance in ((32, 128), (8, 16)):
    rel = torch.arange(300)[None, :] - torch.arange(300)[:, None]
    ref = T5Attention._relative_position_bucket(rel, True, buckets, distance).numpy()
    np.testing.assert_array_equal(t5.relative_position_buckets(300, 300, buckets, distance), ref)


def test_config_resolves_gated_gelu_to_tanh():
  cfg = t5.config_from_transformers(transformers.T5Config(**TINY).to_dict())
  assert cfg.dense_act_fn == "gelu_new" and cfg.is_gated_act
  assert transformers.T5Config(**TINY).dense_act_fn == cfg.dense_act_fn
  assert t5.PRESETS["t5-v1_1-xxl"].d_model == 4096


def test_parity_with_and_without_mask(reference):
  model, _, dst = reference
  module, variables = load_pretrained(dst)
  rng = np.random.default_rng(0)
  ids = rng.integers(2, TINY["vocab_size"], size=(2, 20))
  mask = np.ones((2, 20), np.int64)
  mask[1, 13:] = 0
  ids[1, 13:] = 0
  apply = jax.jit(module.apply)
  with torch.no_grad():
    want = model(torch.from_numpy(ids)).last_hidden_state.numpy()
    want_masked = model(torch.from_numpy(ids),
                        attention_mask=torch.from_numpy(mask)).last_hidden_state.numpy()
  got = np.asarray(apply(variables, jnp.asarray(ids, jnp.int32)))
  got_masked = np.asarray(apply(variables, jnp.asarray(ids, jnp.int32), jnp.asarray(mask)))
  err, err_masked = np.abs(got - want).max(), np.abs(got_masked - want_masked).max()
  print(f"T5 max abs error: no mask {err:.2e}, mask {err_masked:.2e}")
  assert err <= 1e-4 and err_masked <= 1e-4
  # The mask must matter, or the masked check proves nothing.
  assert np.abs(want - want_masked).max() > 1e-2


def test_remat_and_half_precision(reference):
  """remat gives the same loss; bf16/fp16 track transformers loaded in that dtype (fp16 keeps wo
  and the residual stream in float32, as transformers' _keep_in_fp32_modules does)."""
  _, src, dst = reference
  module, variables = load_pretrained(dst)
  ids = np.random.default_rng(1).integers(2, TINY["vocab_size"], (2, 20))
  remat = module.clone(remat_policy="full")
  halves = {"bfloat16": module.clone(dtype=jnp.bfloat16), "float16": module.clone(dtype=jnp.float16)}

  @jax.jit
  def run(v, ids):
    loss, grads = jax.value_and_grad(lambda v: remat.apply(v, ids).sum())(v)
    return module.apply(v, ids).sum(), loss, grads, {k: m.apply(v, ids) for k, m in halves.items()}

  plain_sum, remat_sum, grads, outs = run(variables, jnp.asarray(ids, jnp.int32))
  np.testing.assert_allclose(remat_sum, plain_sum, rtol=1e-6)
  assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree_util.tree_leaves(grads))
  for name, tol in (("bfloat16", 0.1), ("float16", 1e-2)):
    half = transformers.T5EncoderModel.from_pretrained(src, dtype=getattr(torch, name)).eval()
    with torch.no_grad():
      want = half(torch.from_numpy(ids)).last_hidden_state.float().numpy()
    assert outs[name].dtype == jnp.dtype(name)
    err = np.abs(np.asarray(outs[name], np.float32) - want).max()
    print(f"T5 {name} vs transformers {name}: max abs error {err:.2e}")
    assert err <= tol


def test_logical_axes_on_parameters():
  module = t5.T5Encoder(t5.T5Config(**{k: v for k, v in t5.config_from_transformers(
      transformers.T5Config(**TINY).to_dict()).__dict__.items()}))
  boxed = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, 4), jnp.int32))["params"]
  assert boxed["layers"]["q"]["kernel"].names == ("layers", "embed", "heads", "kv")
  assert boxed["layers"]["wo"]["kernel"].names == ("layers", "mlp", "embed")
  assert boxed["shared"]["embedding"].names == (None, "embed")


def test_sharded_checkpoint_with_both_tied_names(reference, tmp_path):
  _, src, _ = reference
  state = parity.read_folder(src)
  state["encoder.embed_tokens.weight"] = state["shared.weight"].copy()
  folder = parity.write_folder(state, tmp_path / "sharded", config_from=src, shards=2)
  dst = parity.convert(t5_encoder.KIND, folder, tmp_path / "out", dtype="bfloat16")
  _, variables = load_pretrained(dst)
  emb = np.asarray(variables["params"]["shared"]["embedding"], np.float32)
  np.testing.assert_allclose(emb, state["shared.weight"], rtol=1e-2, atol=1e-2)

  state["encoder.embed_tokens.weight"] += 1.0
  parity.write_folder(state, folder, config_from=src, shards=2)
  parity.conversion_error(t5_encoder.KIND, folder, tmp_path / "out2",
                          match="shared.weight and encoder.embed_tokens.weight differ")


def test_conversion_errors_are_readable(reference, tmp_path):
  _, src, _ = reference

  def corrupt(state):
    state.pop("encoder.embed_tokens.weight", None)
    del state["encoder.block.1.layer.1.DenseReluDense.wi_1.weight"]
    state["encoder.block.0.layer.0.SelfAttention.q.weight"] = np.zeros((3, 16), np.float32)
    state["encoder.extra.weight"] = np.zeros(2, np.float32)
  folder = parity.edited_copy(src, tmp_path / "corrupt", corrupt)
  msg = str(parity.conversion_error(t5_encoder.KIND, folder, tmp_path / "out"))
  assert "unused source tensor 'encoder.extra.weight'" in msg
  assert "params/layers/wi_1/kernel" in msg and "missing [1]" in msg
  assert "shape mismatch: source 'encoder.block.0.layer.0.SelfAttention.q.weight'" in msg
  (tmp_path / "corrupt" / "config.json").write_text('{"model_type": "clip_vision_model"}')
  parity.conversion_error(t5_encoder.KIND, folder, tmp_path / "out",
                          match="model_type 'clip_vision_model', expected 't5'")


def test_sharded_by_logical_axes_matches_single_device(reference):
  """The logical names map through configs/base.py's rules onto a (data, fsdp, tensor) mesh."""
  import flax.linen as nn
  from jax.sharding import Mesh
  from configs import base
  from conversion.mapping import flatten
  _, _, dst = reference
  module, variables = load_pretrained(dst)
  ids = jnp.asarray(np.arange(24).reshape(2, 12) % TINY["vocab_size"], jnp.int32)
  rules = base.get_config().logical_axis_rules
  mesh = Mesh(np.asarray(jax.devices()[:8]).reshape(2, 2, 2), ("data", "fsdp", "tensor"))
  boxed = jax.eval_shape(module.init, jax.random.key(0), ids)
  shardings = nn.logical_to_mesh_sharding(nn.get_partition_spec(boxed), mesh, rules)
  flat = flatten(shardings)
  assert tuple(flat["params/layers/wi_0/kernel"].spec) == (None, "fsdp", "tensor")
  sharded = jax.device_put(variables, shardings)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    out = jax.jit(module.apply)(sharded, ids)
  np.testing.assert_allclose(np.asarray(out), np.asarray(module.apply(variables, ids)), atol=1e-5)
