"""Guidance tables per step and per frame, and the CFG combination over the frame axis."""
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from sem_repa_jax.diffusion import guidance


def test_frame_scales_ramp_as_svd_and_broadcast_over_frames():
  f = guidance.frame_guidance_scales(14, 1.0, 3.0)
  np.testing.assert_allclose(f.astype(np.float32), torch.linspace(1.0, 3.0, 14).numpy(), rtol=1e-7)
  assert f[0] == 1.0 and f[-1] == 3.0
  rng = np.random.default_rng(0)
  uncond = rng.standard_normal((2, 14, 3, 3, 4)).astype(np.float32)
  cond = rng.standard_normal(uncond.shape).astype(np.float32)
  out = guidance.classifier_free_guidance(jnp.asarray(uncond), jnp.asarray(cond), f)
  for j in (0, 5, 13):
    np.testing.assert_allclose(out[:, j], uncond[:, j] + np.float32(f[j]) * (cond[:, j] - uncond[:, j]),
                               rtol=1e-6, atol=1e-6)
  # Frames on another axis (e.g. channels-first video (B, C, F, h, w)).
  moved = guidance.classifier_free_guidance(jnp.moveaxis(jnp.asarray(uncond), 1, 2),
                                            jnp.moveaxis(jnp.asarray(cond), 1, 2), f, frame_axis=2)
  np.testing.assert_allclose(jnp.moveaxis(moved, 2, 1), out, rtol=0, atol=0)
  with pytest.raises(ValueError, match="expected a scalar or"):
    guidance.classifier_free_guidance(jnp.asarray(uncond), jnp.asarray(cond), np.ones((2, 14)))


def test_step_tables_are_checked():
  assert guidance.step_table(None, 3).shape == (3,)
  table = guidance.every_step(guidance.frame_guidance_scales(5), 3)
  assert table.shape == (3, 5) and np.all(table == table[0])
  assert guidance.step_table(table, 3).shape == (3, 5)
  with pytest.raises(ValueError, match=r"expected \(4,\) per step or \(4, frames\)"):
    guidance.step_table(table, 4)
  with pytest.raises(ValueError, match="expected \\(frames,\\)"):
    guidance.every_step(table, 3)
