"""nn.convs against torch's conv2d / conv3d, on images, videos frame by frame and causal chunks."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sem_repa_jax.nn.convs import CausalConv3d, Conv2D


def _x(seed, *shape):
  return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _randomized(variables, seed):
  r = np.random.default_rng(seed)
  return jax.tree_util.tree_map(lambda a: jnp.asarray(r.standard_normal(a.shape), a.dtype),
                                nn.unbox(variables))


def _torch_conv2d(x, p, stride, padding):
  """x (N, H, W, C); padding ((top, bottom), (left, right)) as F.pad takes it reversed."""
  (t, b), (l, r) = padding
  xt = F.pad(torch.from_numpy(x).permute(0, 3, 1, 2), (l, r, t, b))
  k = torch.from_numpy(np.asarray(p["kernel"])).permute(3, 2, 0, 1)
  bias = torch.from_numpy(np.asarray(p["bias"])) if "bias" in p else None
  return F.conv2d(xt, k, bias, stride).permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("kernel,stride,padding,want_pad", [
    ((3, 3), 1, None, ((1, 1), (1, 1))), ((3, 3), 2, ((0, 1), (0, 1)), ((0, 1), (0, 1))),
    ((1, 1), 1, None, ((0, 0), (0, 0))), ((4, 4), 4, 0, ((0, 0), (0, 0)))])
def test_conv2d_matches_torch(kernel, stride, padding, want_pad):
  x = _x(0, 2, 8, 8, 3)
  conv = Conv2D(5, kernel, stride, padding)
  v = conv.init(jax.random.PRNGKey(0), jnp.asarray(x))
  assert v["params"]["kernel"].names == (None, None, "conv_in", "conv_out")
  assert v["params"]["bias"].names == ("conv_out",)
  v = _randomized(v, 1)
  got = conv.apply(v, jnp.asarray(x))
  np.testing.assert_allclose(np.asarray(got), _torch_conv2d(x, v["params"], stride, want_pad),
                             atol=1e-5, rtol=0)


def test_conv2d_on_a_video_is_the_image_conv_of_every_frame():
  video = _x(2, 2, 3, 6, 6, 4)
  conv = Conv2D(3, (3, 3), 2, use_bias=False, kernel_axes=(None, None, None, "embed"))
  v = conv.init(jax.random.PRNGKey(0), jnp.asarray(video))
  assert set(v["params"]) == {"kernel"} and v["params"]["kernel"].names[-1] == "embed"
  got = np.asarray(conv.apply(v, jnp.asarray(video)))
  assert got.shape == (2, 3, 3, 3, 3)
  for f in range(3):
    np.testing.assert_array_equal(got[:, f], conv.apply(v, jnp.asarray(video[:, f])))
  with pytest.raises(ValueError, match="Conv2D takes"):
    conv.apply(v, jnp.asarray(video[0, 0]))


def _torch_causal(x, p, kt):
  """diffusers' CogVideoXCausalConv3d: replicate the first frame k_t - 1 times, spatial zero pad."""
  t = torch.from_numpy(x).permute(0, 4, 1, 2, 3)
  t = torch.cat([t[:, :, :1]] * (kt - 1) + [t], dim=2)
  k = torch.from_numpy(np.asarray(p["kernel"])).permute(4, 3, 0, 1, 2)
  y = F.conv3d(t, k, torch.from_numpy(np.asarray(p["bias"])), padding=(0, 1, 1))
  return y.permute(0, 2, 3, 4, 1).numpy()


@pytest.mark.parametrize("impl", ["taps", "conv3d"])
def test_causal_conv3d_matches_torch_and_carries_its_cache(impl):
  video = _x(3, 1, 7, 5, 6, 2)
  conv = CausalConv3d(4, impl=impl)
  v = conv.init(jax.random.PRNGKey(0), jnp.asarray(video))
  assert v["params"]["kernel"].names == (None, None, None, "conv_in", "conv_out")
  v = _randomized(v, 4)
  whole, _ = conv.apply(v, jnp.asarray(video))
  np.testing.assert_allclose(np.asarray(whole), _torch_causal(video, v["params"], 3), atol=1e-4,
                             rtol=0)
  # Chunk by chunk, the cache makes the result the whole video's.
  first, cache = conv.apply(v, jnp.asarray(video[:, :3]))
  assert cache.shape == (1, 2, 5, 6, 2)
  rest, _ = conv.apply(v, jnp.asarray(video[:, 3:]), cache)
  np.testing.assert_allclose(np.concatenate([first, rest], 1), whole, atol=1e-5, rtol=0)


def test_pointwise_causal_conv_has_no_cache():
  video = _x(5, 1, 3, 2, 2, 3)
  conv = CausalConv3d(2, (1, 1, 1))
  v = conv.init(jax.random.PRNGKey(0), jnp.asarray(video))
  y, cache = conv.apply(v, jnp.asarray(video))
  assert cache is None
  k = np.asarray(nn.unbox(v)["params"]["kernel"])[0, 0, 0]
  np.testing.assert_allclose(np.asarray(y), video @ k, atol=1e-6, rtol=0)
