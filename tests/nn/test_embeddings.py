import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers.models import embeddings as ref
from diffusers.pipelines.cogvideo.pipeline_cogvideox import \
    get_resize_crop_region_for_grid as ref_crop_region

from sem_repa_jax.nn import embeddings as emb


@pytest.mark.parametrize("dim,flip,shift,scale,max_period", [
    (32, True, 0, 1, 10000), (33, False, 1, 1, 10000), (16, True, 1, 2.5, 1000)])
def test_timestep_embedding_matches_diffusers(dim, flip, shift, scale, max_period):
  t = np.array([0.0, 1.0, 17.5, 500.0, 999.0], np.float32)
  got = emb.get_timestep_embedding(jnp.asarray(t), dim, flip, shift, scale, max_period)
  want = ref.get_timestep_embedding(torch.from_numpy(t), dim, flip, shift, scale, max_period)
  assert got.dtype == jnp.float32 and got.shape == tuple(want.shape)
  np.testing.assert_allclose(np.asarray(got), want.numpy(), atol=2e-5, rtol=0)


@pytest.mark.parametrize("dim,spatial,frames,scale", [(32, (6, 4), 3, 1.875), (64, (5, 5), 2, 1.0)])
def test_3d_sincos_matches_diffusers(dim, spatial, frames, scale):
  got = emb.get_3d_sincos_pos_embed(dim, spatial, frames, scale, 1.0)
  want = ref.get_3d_sincos_pos_embed(dim, spatial, frames, scale, 1.0, output_type="pt")
  assert got.dtype == np.float64 and want.dtype == torch.float64
  np.testing.assert_allclose(got, want.numpy(), atol=1e-12, rtol=0)


@pytest.mark.parametrize("grid,base", [((30, 45), (30, 45)), ((20, 32), (30, 45)),
                                       ((4, 6), (5, 5)), ((7, 3), (4, 6))])
def test_resize_crop_region_matches_pipeline(grid, base):
  assert emb.get_resize_crop_region_for_grid(grid, base[1], base[0]) == ref_crop_region(
      grid, base[1], base[0])


@pytest.mark.parametrize("start,end,steps", [(0, 29 * 44 / 45, 45), (3, 26 * 6 / 7, 7), (0, 0, 1),
                                             (0, 12 * 13 / 13, 13)])
def test_linspace_is_torch_float32_linspace(start, end, steps):
  want = torch.linspace(start, end, steps, dtype=torch.float32).numpy()
  np.testing.assert_array_equal(emb._linspace_float32(start, end, steps), want)


@pytest.mark.parametrize("head_dim,grid,frames,base", [(64, (6, 8), 3, (5, 9)), (16, (3, 4), 2, (4, 4))])
def test_3d_rope_linspace_matches_diffusers(head_dim, grid, frames, base):
  crops = emb.get_resize_crop_region_for_grid(grid, base[1], base[0])
  got = emb.get_3d_rotary_pos_embed(head_dim, crops, grid, frames)
  want = ref.get_3d_rotary_pos_embed(head_dim, crops, grid, frames)
  for g, w in zip(got, want):
    assert g.dtype == np.float32 and g.shape == tuple(w.shape)
    np.testing.assert_allclose(g, w.numpy(), atol=1e-6, rtol=0)


def test_3d_rope_slice_matches_diffusers():
  got = emb.get_3d_rotary_pos_embed(32, None, (3, 5), 2, grid_type="slice", max_size=(8, 9))
  want = ref.get_3d_rotary_pos_embed(32, None, (3, 5), 2, grid_type="slice", max_size=(8, 9))
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w.numpy(), atol=1e-6, rtol=0)
  with pytest.raises(ValueError, match="exceeds the model's maximum"):
    emb.get_3d_rotary_pos_embed(32, None, (9, 5), 2, grid_type="slice", max_size=(8, 9))


def test_apply_rotary_emb_matches_diffusers_both_layouts():
  r = np.random.default_rng(0)
  cos, sin = emb.get_3d_rotary_pos_embed(16, ((0, 0), (2, 3)), (2, 3), 2)
  x = r.standard_normal((2, 3, 12, 16)).astype(np.float32)   # (B, N, S, D)
  want = ref.apply_rotary_emb(torch.from_numpy(x), (torch.from_numpy(cos), torch.from_numpy(sin)))
  got2 = emb.apply_rotary_emb(jnp.asarray(x), (cos, sin), sequence_dim=2)
  got1 = emb.apply_rotary_emb(jnp.asarray(x.transpose(0, 2, 1, 3)), (cos, sin))
  np.testing.assert_allclose(np.asarray(got2), want.numpy(), atol=1e-6, rtol=0)
  np.testing.assert_allclose(np.asarray(got1).transpose(0, 2, 1, 3), want.numpy(), atol=1e-6, rtol=0)
  xb = jnp.asarray(x, jnp.bfloat16)
  assert emb.apply_rotary_emb(xb, (cos, sin), sequence_dim=2).dtype == jnp.bfloat16


def test_timestep_embedding_module_matches_diffusers():
  torch.manual_seed(0)
  module = ref.TimestepEmbedding(8, 12, out_dim=6).eval()
  sd = {k: v.detach().numpy() for k, v in module.state_dict().items()}
  params = {name: {"kernel": jnp.asarray(sd[f"{name}.weight"].T), "bias": jnp.asarray(sd[f"{name}.bias"])}
            for name in ("linear_1", "linear_2")}
  x = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
  got = emb.TimestepEmbedding(12, out_features=6).apply({"params": params}, jnp.asarray(x))
  with torch.no_grad():
    want = module(torch.from_numpy(x)).numpy()
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-5, rtol=0)
