"""The evaluation suite: every selected metric of a batch of frame pairs in one jitted function.

Frames arrive as uint8 RGB (B, H, W, 3), generated and reference. Per-pair metrics (PSNR, SSIM,
L1: float pixels with data_range 255; LPIPS: pixels mapped to [-1, 1]) come back per frame;
set metrics (FID) come back as features of both frames, for `eval/fid.py` to fit and compare
once all videos are seen. The clip metrics (FVD, FID-VID: eval/fvd.py) take clips (B, T, H, W, 3)
through `clip_function` and give I3D's logits and pool of both sides, one I3D pass for both.
The motion score (eval/motion.py) takes consecutive frame pairs (B, 2, H, W, 3) through
`motion_function`: RAFT's flow of both sides in one pass, colorized, and the FID Inception's
features of the flow images. CPBD (eval/cpbd.py) scores generated frames alone, and CSIM and
the ID score (eval/identity.py) compare ArcFace embeddings of detected faces, per video on the
host (detection is onnxruntime's): the job calls them. The text score (eval/text_score.py) takes
CLIP-preprocessed frames of one video and its prompt through `text_function`. Networks' variables are arguments of the jitted function, not constants folded into
it, so one compilation serves every batch of one shape.
"""
from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp

from sem_repa_jax.eval import metrics as pixel

PAIR_METRICS = ("psnr", "ssim", "l1", "lpips")
CLIP_METRICS = ("fvd", "fid_vid")
MOTION_METRICS = ("motion_score",)
SET_METRICS = ("fid",) + CLIP_METRICS + MOTION_METRICS
GENERATED_METRICS = ("cpbd",)   # of generated frames alone, no reference
IDENTITY_METRICS = ("csim", "id_score")   # ArcFace cosines of detected faces (eval/identity.py)
TEXT_METRICS = ("text_score",)   # CLIP cosine of generated frames and the prompt (eval/text_score.py)
METRICS = PAIR_METRICS + SET_METRICS + GENERATED_METRICS + IDENTITY_METRICS + TEXT_METRICS
NETWORK_KIND = {"lpips": "lpips", "fid": "fid-inception", "fvd": "i3d", "fid_vid": "i3d",
                "motion_score": "raft", "csim": "arcface", "id_score": "arcface",
                "text_score": "clip"}
# config.evaluate field of each network folder; FVD and FID-VID share one I3D, CSIM and the ID
# score one ArcFace.
WEIGHTS_FIELD = {"lpips": "lpips_weights", "fid": "fid_weights", "fvd": "i3d_weights",
                 "fid_vid": "i3d_weights", "motion_score": "raft_weights",
                 "csim": "arcface_weights", "id_score": "arcface_weights",
                 "text_score": "clip_weights"}
# Networks of other metrics a metric runs too: the motion score's FID is FID's Inception.
ALSO_NEEDS = {"motion_score": ("fid",)}
FEATURES = {"fid": 2048, "fvd": 400, "fid_vid": 1024, "motion_score": 2048}   # of set metrics
LOWER_IS_BETTER = {"psnr": False, "ssim": False, "l1": True, "lpips": True, "fid": True,
                   "fvd": True, "fid_vid": True, "cpbd": False, "motion_score": True,
                   "csim": False, "id_score": False, "text_score": False}


def check_metrics(names: Sequence[str], field: str = "config.evaluate.metrics") -> tuple:
  """The metric names, checked: known, none twice, at least one."""
  names = tuple(names)
  unknown = [n for n in names if n not in METRICS]
  if unknown or not names or len(set(names)) != len(names):
    raise ValueError(f"{field} = {list(names)}: expected a non-empty list without repeats of "
                     f"{', '.join(METRICS)}")
  return names


def networks_needed(names: Sequence[str]) -> list:
  """[(network, the metric that needs it)]: the keys of NETWORK_KIND that `names` run, once each
  (a metric's own network, then those of ALSO_NEEDS)."""
  out = {}
  for m in check_metrics(names):
    for network in (m,) + ALSO_NEEDS.get(m, ()):
      if network in NETWORK_KIND:
        out.setdefault(network, m)
  return list(out.items())


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


def clip_function(names: Sequence[str], networks: Mapping[str, tuple]) -> Callable:
  """fn(variables, generated, reference) on uint8 clips (B, T, H, W, 3) -> {'fvd_generated',
  'fvd_reference': (B, 400), 'fid_vid_generated', 'fid_vid_reference': (B, 1024)} for the clip
  metrics among `names`; both read one I3D pass (eval/fvd.py LAYER)."""
  from sem_repa_jax.eval.fvd import LAYER
  clip_names = [n for n in check_metrics(names) if n in CLIP_METRICS]
  if not clip_names or any(n not in networks for n in clip_names):
    raise ValueError(f"clip_function: needs the I3D network of {clip_names or list(CLIP_METRICS)}")
  module = networks[clip_names[0]][0]

  def fn(variables, generated, reference):
    if generated.shape != reference.shape:
      raise ValueError(f"clips {generated.shape} and {reference.shape} differ")
    both = jnp.concatenate([generated, reference]).astype(jnp.float32) / 127.5 - 1.0
    out = module.apply(variables[clip_names[0]], both)
    return {f"{n}_{side}": part for n in clip_names
            for side, part in zip(("generated", "reference"), jnp.split(out[LAYER[n]], 2))}

  return jax.jit(fn)


def motion_function(networks: Mapping[str, tuple]) -> Callable:
  """fn(variables, generated, reference) on uint8 frame pairs (B, 2, H, W, 3) ->
  {'motion_score_generated', 'motion_score_reference': (B, 2048)}: the FID Inception's features
  of the colorized RAFT flows (eval/motion.py); `networks` holds 'motion_score' (RAFT) and 'fid'."""
  from sem_repa_jax.eval.motion import colorized_flow
  if "motion_score" not in networks or "fid" not in networks:
    raise ValueError("motion_function: needs the RAFT ('motion_score') and Inception ('fid') "
                     f"networks; got {sorted(networks)}")
  raft, inception = networks["motion_score"][0], networks["fid"][0]

  def fn(variables, generated, reference):
    if generated.shape != reference.shape:
      raise ValueError(f"frame pairs {generated.shape} and {reference.shape} differ")
    colors = colorized_flow(raft, variables["motion_score"], jnp.concatenate([generated, reference]))
    feats = inception.apply(variables["fid"], colors.astype(jnp.float32) / 127.5 - 1.0)
    return dict(zip(("motion_score_generated", "motion_score_reference"), jnp.split(feats, 2)))

  return jax.jit(fn)


def text_function(networks: Mapping[str, tuple]) -> Callable:
  """fn(variables, pixels, input_ids, attention_mask) -> (B,) raw cosine of each frame with the
  prompt: pixels (B, S, S, 3) from eval/text_score.clip_pixels, input_ids and attention_mask
  (1, L) from encoders/tokenize.tokenize_clip; `networks` holds 'text_score' (a CLIPModel)."""
  from sem_repa_jax.eval.text_score import cosine_similarity
  if "text_score" not in networks:
    raise ValueError(f"text_function: needs the CLIP ('text_score') network; got {sorted(networks)}")
  clip = networks["text_score"][0]

  def fn(variables, pixels, input_ids, attention_mask):
    v = variables["text_score"]
    image = clip.apply(v, pixels, method="image_features")
    text = clip.apply(v, input_ids, attention_mask, method="text_features")
    return cosine_similarity(image, text)

  return jax.jit(fn)
