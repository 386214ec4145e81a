"""The evaluation suite: every selected metric of a batch of frame pairs in one jitted function.

Frames arrive as uint8 RGB (B, H, W, 3), generated and reference. Per-pair metrics (PSNR, SSIM,
L1: float pixels with data_range 255; LPIPS: pixels mapped to [-1, 1]) come back per frame;
set metrics (FID) come back as features of both frames, for `eval/fid.py` to fit and compare
once all videos are seen. Networks' variables are arguments of the jitted function, not
constants folded into it, so one compilation serves every batch of one shape.
"""
from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp

from sem_repa_jax.eval import metrics as pixel

PAIR_METRICS = ("psnr", "ssim", "l1", "lpips")
SET_METRICS = ("fid",)
METRICS = PAIR_METRICS + SET_METRICS
NETWORK_KIND = {"lpips": "lpips", "fid": "fid-inception"}   # metric -> the kind of its network
LOWER_IS_BETTER = {"psnr": False, "ssim": False, "l1": True, "lpips": True, "fid": True}


def check_metrics(names: Sequence[str], field: str = "config.evaluate.metrics") -> tuple:
  """The metric names, checked: known, none twice, at least one."""
  names = tuple(names)
  unknown = [n for n in names if n not in METRICS]
  if unknown or not names or len(set(names)) != len(names):
    raise ValueError(f"{field} = {list(names)}: expected a non-empty list without repeats of "
                     f"{', '.join(METRICS)}")
  return names


def batch_function(names: Sequence[str], networks: Mapping[str, tuple]) -> Callable:
  """fn(variables, generated, reference) -> {metric: (B,)} plus {'fid_generated',
  'fid_reference': (B, 2048)}; `variables` is {metric: variables} of `networks` (metric ->
  (module, variables)) for the metrics that need one."""
  names = check_metrics(names)
  missing = [n for n in names if n in NETWORK_KIND and n not in networks]
  if missing:
    raise ValueError(f"batch_function: no network given for {missing}")

  def fn(variables, generated, reference):
    if generated.shape != reference.shape:
      raise ValueError(f"frames {generated.shape} and {reference.shape} differ")
    g, r = generated.astype(jnp.float32), reference.astype(jnp.float32)
    out = {}
    if "psnr" in names:
      out["psnr"] = pixel.psnr(g, r, data_range=255.0)
    if "ssim" in names:
      out["ssim"] = pixel.ssim(g, r, data_range=255.0)
    if "l1" in names:
      out["l1"] = pixel.l1(g, r, data_range=255.0)
    signed = lambda x: x / 127.5 - 1.0
    if "lpips" in names:
      out["lpips"] = networks["lpips"][0].apply(variables["lpips"], signed(g), signed(r))
    if "fid" in names:
      feats = networks["fid"][0].apply(variables["fid"], signed(jnp.concatenate([g, r])))
      out["fid_generated"], out["fid_reference"] = jnp.split(feats, 2)
    return out

  return jax.jit(fn)
