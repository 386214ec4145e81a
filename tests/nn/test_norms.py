"""nn.norms against torch's layer_norm / group_norm (and flax's LayerNorm, which it replaces)."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sem_repa_jax.nn.norms import GroupNorm, LayerNorm


def _x(seed, *shape, offset=0.0):
  return (np.random.default_rng(seed).standard_normal(shape) * 2 + offset).astype(np.float32)


def _affine(variables, seed):
  r = np.random.default_rng(seed)
  return jax.tree_util.tree_map(lambda a: jnp.asarray(1 + 0.3 * r.standard_normal(a.shape),
                                                       a.dtype), nn.unbox(variables))


def test_layer_norm_matches_torch_and_flax():
  x = _x(0, 2, 5, 12, offset=3.0)
  ln = LayerNorm(1e-5, axis_name="embed")
  v = ln.init(jax.random.PRNGKey(0), jnp.asarray(x))
  assert v["params"]["scale"].names == ("embed",) and v["params"]["bias"].names == ("embed",)
  v = _affine(v, 1)
  p = v["params"]
  got = ln.apply(v, jnp.asarray(x))
  want = F.layer_norm(torch.from_numpy(x), (12,), torch.from_numpy(np.asarray(p["scale"])),
                      torch.from_numpy(np.asarray(p["bias"])), 1e-5).numpy()
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-5, rtol=0)
  flax_ln = nn.LayerNorm(epsilon=1e-5, use_fast_variance=False)
  np.testing.assert_array_equal(got, flax_ln.apply(v, jnp.asarray(x)))


def test_layer_norm_without_affine_computes_in_float32_and_returns_dtype():
  x = _x(2, 3, 16)
  ln = LayerNorm(1e-6, affine=False, dtype=jnp.bfloat16)
  v = ln.init(jax.random.PRNGKey(0), jnp.asarray(x, jnp.bfloat16))
  assert not v   # no parameters
  got = ln.apply(v, jnp.asarray(x, jnp.bfloat16))
  assert got.dtype == jnp.bfloat16
  x16 = np.asarray(jnp.asarray(x, jnp.bfloat16).astype(jnp.float32))
  want = F.layer_norm(torch.from_numpy(x16), (16,), eps=1e-6).numpy()
  np.testing.assert_allclose(np.asarray(got, np.float32), want, atol=2e-2, rtol=0)


@pytest.mark.parametrize("per_frame", [False, True])
def test_group_norm_on_videos_matches_torch(per_frame):
  """Across frames: torch's GroupNorm of (B, C, F, H, W); per frame: of (B*F, C, H, W)."""
  b, f, h, w, c, groups = 2, 3, 4, 5, 8, 4
  x = _x(3, b, f, h, w, c, offset=1.5)
  gn = GroupNorm(groups, 1e-6, per_frame=per_frame)
  v = _affine(gn.init(jax.random.PRNGKey(0), jnp.asarray(x)), 4)
  got = np.asarray(gn.apply(v, jnp.asarray(x)))
  scale, bias = (torch.from_numpy(np.asarray(v["params"][k])) for k in ("scale", "bias"))
  t = torch.from_numpy(x)
  if per_frame:
    ref = F.group_norm(t.reshape(b * f, h, w, c).permute(0, 3, 1, 2), groups, scale, bias, 1e-6)
    want = ref.permute(0, 2, 3, 1).reshape(b, f, h, w, c).numpy()
  else:
    want = F.group_norm(t.permute(0, 4, 1, 2, 3), groups, scale, bias, 1e-6)
    want = want.permute(0, 2, 3, 4, 1).numpy()
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
  other = np.asarray(GroupNorm(groups, 1e-6, per_frame=not per_frame).apply(v, jnp.asarray(x)))
  assert np.abs(other - got).max() > 1e-3   # the two statistics really differ


def test_group_norm_on_images_and_its_errors():
  x = _x(5, 2, 6, 6, 8)
  gn = GroupNorm(2, 1e-5, dtype=jnp.bfloat16)
  v = gn.init(jax.random.PRNGKey(0), jnp.asarray(x))
  assert v["params"]["scale"].names == ("channels",)
  got = gn.apply(v, jnp.asarray(x))
  assert got.dtype == jnp.bfloat16
  want = F.group_norm(torch.from_numpy(x).permute(0, 3, 1, 2), 2, eps=1e-5).permute(0, 2, 3, 1)
  np.testing.assert_allclose(np.asarray(got, np.float32), want.numpy(), atol=3e-2, rtol=0)
  with pytest.raises(ValueError, match="8 channels do not split into 3 groups"):
    GroupNorm(3).init(jax.random.PRNGKey(0), jnp.asarray(x))
  with pytest.raises(ValueError, match="per_frame=True"):
    GroupNorm(2, per_frame=True).init(jax.random.PRNGKey(0), jnp.asarray(x))
