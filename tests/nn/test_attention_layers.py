"""nn.attention_layers.Attention against diffusers' Attention (its default and IP-Adapter
processors) and plain torch attention, with the torch weights copied into the Flax kernels."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention as TorchAttention
from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0

from sem_repa_jax.nn.attention_layers import Attention

HEADS, HEAD_DIM, DIM, CTX = 2, 8, 12, 10


def _randomized(module, seed):
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for p in module.parameters():
      p.copy_(0.3 * torch.randn(p.shape, generator=g))
  return module.eval()


def _qkv_kernel(linear):   # torch Linear (heads*hd, in) -> (in, heads, hd)
  return linear.weight.detach().numpy().T.reshape(-1, HEADS, HEAD_DIM)


def _params(ref: TorchAttention, groups=()):
  p = {}
  for name in ("to_q", "to_k", "to_v"):
    lin = getattr(ref, name)
    p[name] = {"kernel": _qkv_kernel(lin)}
    if lin.bias is not None:
      p[name]["bias"] = lin.bias.detach().numpy().reshape(HEADS, HEAD_DIM)
  out = ref.to_out[0]
  p["to_out"] = {"kernel": out.weight.detach().numpy().T.reshape(HEADS, HEAD_DIM, -1),
                 "bias": out.bias.detach().numpy()}
  for i, g in enumerate(groups):
    p[f"to_k_{g}"] = {"kernel": _qkv_kernel(ref.processor.to_k_ip[i])}
    p[f"to_v_{g}"] = {"kernel": _qkv_kernel(ref.processor.to_v_ip[i])}
  return {"params": jax.tree_util.tree_map(jnp.asarray, p)}


def _x(seed, *shape):
  return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _torch(ref, x, **kw):
  with torch.no_grad():
    return ref(torch.from_numpy(x), **kw).numpy()


def test_self_attention_matches_diffusers():
  ref = _randomized(TorchAttention(DIM, heads=HEADS, dim_head=HEAD_DIM, bias=True), 0)
  x = _x(1, 2, 7, DIM)
  layer = Attention(HEADS, HEAD_DIM, qkv_bias=True)
  variables = _params(ref)
  got = layer.apply(variables, jnp.asarray(x))
  np.testing.assert_allclose(np.asarray(got), _torch(ref, x), atol=1e-5, rtol=0)
  # The tree the converters write to: exactly these names and shapes.
  init = jax.eval_shape(layer.init, jax.random.PRNGKey(0), jnp.asarray(x))
  assert (jax.tree_util.tree_map(lambda a: a.shape, nn.unbox(init))
          == jax.tree_util.tree_map(lambda a: a.shape, variables))


def test_cross_attention_with_mask_matches_diffusers():
  ref = _randomized(TorchAttention(DIM, cross_attention_dim=CTX, heads=HEADS, dim_head=HEAD_DIM), 2)
  x, ctx = _x(3, 2, 5, DIM), _x(4, 2, 9, CTX)
  mask = np.random.default_rng(5).random((2, 9)) > 0.3
  mask[:, 0] = True
  got = Attention(HEADS, HEAD_DIM).apply(
      _params(ref), jnp.asarray(x), jnp.asarray(ctx), mask=jnp.asarray(mask)[:, None, None, :])
  want = _torch(ref, x, encoder_hidden_states=torch.from_numpy(ctx),
                attention_mask=torch.from_numpy(mask))
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-5, rtol=0)


def test_extra_context_groups_match_ip_adapter_processor():
  """Decoupled cross-attention: two groups with their own k/v, each added with its scale."""
  ref = TorchAttention(DIM, cross_attention_dim=CTX, heads=HEADS, dim_head=HEAD_DIM)
  ref.set_processor(IPAdapterAttnProcessor2_0(HEADS * HEAD_DIM, CTX, num_tokens=(4, 3),
                                              scale=[0.7, 1.3]))
  ref = _randomized(ref, 6)
  x, ctx = _x(7, 2, 6, DIM), _x(8, 2, 1, CTX)
  faces, extra = _x(9, 2, 4, CTX), _x(10, 2, 3, CTX)
  layer = Attention(HEADS, HEAD_DIM, extra_groups=("ip", "face"))
  got = layer.apply(_params(ref, ("ip", "face")), jnp.asarray(x), jnp.asarray(ctx),
                    extra_context={"ip": jnp.asarray(faces), "face": jnp.asarray(extra)},
                    extra_scale={"ip": 0.7, "face": 1.3})
  want = _torch(ref, x, encoder_hidden_states=(
      torch.from_numpy(ctx), [torch.from_numpy(faces), torch.from_numpy(extra)]))
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-5, rtol=0)
  # Scale 0 leaves the plain cross-attention of the same weights.
  plain = TorchAttention(DIM, cross_attention_dim=CTX, heads=HEADS, dim_head=HEAD_DIM)
  plain.load_state_dict({k: v for k, v in ref.state_dict().items() if "_ip" not in k})
  zero = layer.apply(_params(ref, ("ip", "face")), jnp.asarray(x), jnp.asarray(ctx),
                     extra_context={"ip": jnp.asarray(faces), "face": jnp.asarray(extra)},
                     extra_scale=0.0)
  np.testing.assert_allclose(np.asarray(zero), _torch(plain.eval(), x,
                                                      encoder_hidden_states=torch.from_numpy(ctx)),
                             atol=1e-5, rtol=0)


def test_reference_tokens_join_the_self_attention():
  """ReferenceNet: the reference hidden states are keys/values of this layer's own projections."""
  ref = _randomized(TorchAttention(DIM, heads=HEADS, dim_head=HEAD_DIM), 11)
  x, reference = _x(12, 2, 6, DIM), _x(13, 2, 4, DIM)
  got = Attention(HEADS, HEAD_DIM).apply(_params(ref), jnp.asarray(x),
                                         reference=jnp.asarray(reference))
  want = _torch(ref, x, encoder_hidden_states=torch.from_numpy(np.concatenate([x, reference], 1)))
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-5, rtol=0)


def test_injected_kv_are_concatenated_to_the_layers_own():
  ref = _randomized(TorchAttention(DIM, heads=HEADS, dim_head=HEAD_DIM, bias=True), 14)
  x = _x(15, 2, 5, DIM)
  k_in, v_in = _x(16, 2, 3, HEADS, HEAD_DIM), _x(17, 2, 3, HEADS, HEAD_DIM)
  got = Attention(HEADS, HEAD_DIM, qkv_bias=True).apply(
      _params(ref), jnp.asarray(x), injected_kv=(jnp.asarray(k_in), jnp.asarray(v_in)))
  with torch.no_grad():
    t = torch.from_numpy(x)
    heads = lambda a: a.reshape(2, -1, HEADS, HEAD_DIM)
    k = torch.cat([heads(ref.to_k(t)), torch.from_numpy(k_in)], 1).transpose(1, 2)
    v = torch.cat([heads(ref.to_v(t)), torch.from_numpy(v_in)], 1).transpose(1, 2)
    o = F.scaled_dot_product_attention(heads(ref.to_q(t)).transpose(1, 2), k, v)
    want = ref.to_out[0](o.transpose(1, 2).reshape(2, 5, -1)).numpy()
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-5, rtol=0)


def test_qk_norm_and_rope_follow_the_cogvideox_convention():
  """LayerNorm over head_dim on q and k, then RoPE: identity tables leave the normed attention."""
  x = jnp.asarray(_x(18, 1, 4, DIM))
  layer = Attention(HEADS, HEAD_DIM, qk_norm=True)
  variables = layer.init(jax.random.PRNGKey(0), x)
  assert set(variables["params"]) == {"to_q", "to_k", "to_v", "norm_q", "norm_k", "to_out"}
  assert variables["params"]["norm_q"]["scale"].names == ("kv",)
  identity = (jnp.ones((4, HEAD_DIM)), jnp.zeros((4, HEAD_DIM)))
  np.testing.assert_array_equal(layer.apply(variables, x, rope=identity), layer.apply(variables, x))
  angle = jnp.full((4, HEAD_DIM), 0.5)
  rotated = layer.apply(variables, x, rope=(jnp.cos(angle), jnp.sin(angle)))
  assert not np.allclose(rotated, layer.apply(variables, x))
  wide = Attention(HEADS, HEAD_DIM, out_features=6)
  assert wide.apply(wide.init(jax.random.PRNGKey(0), x), x).shape == (1, 4, 6)


def test_extra_context_must_name_every_group():
  layer = Attention(HEADS, HEAD_DIM, extra_groups=("ip",))
  x = jnp.zeros((1, 3, DIM))
  with pytest.raises(ValueError, match=r"extra_context has groups \[\], this layer has \['ip'\]"):
    layer.init(jax.random.PRNGKey(0), x, x)
  with pytest.raises(ValueError, match="tokens"):
    Attention(HEADS, HEAD_DIM).init(jax.random.PRNGKey(0), jnp.zeros((1, 2, 3, DIM)))
