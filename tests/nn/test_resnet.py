"""nn.resnet.ResnetBlock against diffusers' ResnetBlock2D with every weight copied across."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers.models.resnet import ResnetBlock2D

from sem_repa_jax.nn.resnet import ResnetBlock


def _flax_params(ref: ResnetBlock2D):
  sd = {k: v.detach().numpy() for k, v in ref.state_dict().items()}
  p = {}
  for name in ("norm1", "norm2"):
    p[name] = {"scale": sd[f"{name}.weight"], "bias": sd[f"{name}.bias"]}
  for name in ("conv1", "conv2", "conv_shortcut"):
    if f"{name}.weight" in sd:
      p[name] = {"kernel": sd[f"{name}.weight"].transpose(2, 3, 1, 0), "bias": sd[f"{name}.bias"]}
  if "time_emb_proj.weight" in sd:
    p["time_emb_proj"] = {"kernel": sd["time_emb_proj.weight"].T, "bias": sd["time_emb_proj.bias"]}
  return {"params": jax.tree_util.tree_map(jnp.asarray, p)}


def _reference(cin, cout, temb, groups, eps, scale, seed):
  torch.manual_seed(seed)
  ref = ResnetBlock2D(in_channels=cin, out_channels=cout, temb_channels=temb, groups=groups,
                      eps=eps, output_scale_factor=scale).eval()
  g = torch.Generator().manual_seed(seed + 1)
  with torch.no_grad():
    for p in ref.parameters():
      p.add_(0.2 * torch.randn(p.shape, generator=g))
  return ref


@pytest.mark.parametrize("cin,cout,temb,scale", [(8, 16, 12, 1.0), (16, 16, None, 2.0)])
def test_matches_diffusers_resnet_block_2d(cin, cout, temb, scale):
  ref = _reference(cin, cout, temb, 4, 1e-5, scale, 0)
  r = np.random.default_rng(1)
  x = r.standard_normal((2, 6, 6, cin)).astype(np.float32)
  t = r.standard_normal((2, temb)).astype(np.float32) if temb else None
  block = ResnetBlock(cout, groups=4, eps=1e-5, output_scale_factor=scale)
  variables = _flax_params(ref)
  args = (jnp.asarray(x),) + ((jnp.asarray(t),) if temb else ())
  init = nn.unbox(jax.eval_shape(block.init, jax.random.PRNGKey(0), *args))
  assert (jax.tree_util.tree_map(lambda a: a.shape, init)
          == jax.tree_util.tree_map(lambda a: a.shape, variables))   # the same names and shapes
  got, cache = block.apply(variables, *args)
  assert cache == {"conv1": None, "conv2": None}
  with torch.no_grad():
    want = ref(torch.from_numpy(x).permute(0, 3, 1, 2),
               None if t is None else torch.from_numpy(t)).permute(0, 2, 3, 1).numpy()
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-5, rtol=0)


def test_video_frames_take_per_frame_time_embeddings():
  """(B, F, H, W, C) with temb (B, F, D): each frame is the image block with its own embedding."""
  r = np.random.default_rng(2)
  video = jnp.asarray(r.standard_normal((2, 3, 4, 4, 8)), jnp.float32)
  temb = jnp.asarray(r.standard_normal((2, 3, 6)), jnp.float32)
  block = ResnetBlock(8, groups=2)
  v = block.init(jax.random.PRNGKey(0), video[:, 0], temb[:, 0])
  got, _ = block.apply(v, video, temb)
  for f in range(3):
    frame, _ = block.apply(v, video[:, f], temb[:, f])
    np.testing.assert_allclose(np.asarray(got[:, f]), np.asarray(frame), atol=1e-6, rtol=0)
  across, _ = ResnetBlock(8, groups=2, norm_per_frame=False).apply(v, video, temb)
  assert np.abs(np.asarray(across) - np.asarray(got)).max() > 1e-3


def test_dropout_is_active_only_when_not_deterministic():
  x = jnp.asarray(np.random.default_rng(3).standard_normal((1, 4, 4, 4)), jnp.float32)
  block = ResnetBlock(4, groups=2, dropout=0.5)
  v = block.init(jax.random.PRNGKey(0), x)
  a, _ = block.apply(v, x)
  b, _ = block.apply(v, x, deterministic=True)
  np.testing.assert_array_equal(a, b)
  c, _ = block.apply(v, x, deterministic=False, rngs={"dropout": jax.random.PRNGKey(1)})
  assert not np.allclose(a, c)
