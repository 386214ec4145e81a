"""Random Stable Video Diffusion models for the SVD benchmarks, the same weights on both sides.

Each model is built in diffusers / transformers (torch's default initialization), and its state
dict is converted in memory by our converters (conversion/svd_unet.py, svd_vae.py, clip_vision.py:
the strict mappings `python -m conversion` uses) into our modules. Sizes:
  tiny  seconds on CPU;
  mid   a minute or two on CPU;
  xt    stable-video-diffusion-img2vid-xt: U-Net (320, 640, 1280, 1280), the VAE, CLIP ViT-H/14,
        25 frames of 576 x 1024 (for a GPU).
"""
import dataclasses
import os
from typing import Optional

import numpy as np


@dataclasses.dataclass(frozen=True)
class Size:
  unet: dict
  vae: dict
  clip: dict
  height: int
  width: int
  frames: int


_TINY_UNET = dict(block_out_channels=(32, 64),
                  down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
                  up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
                  layers_per_block=1, num_attention_heads=(2, 4), cross_attention_dim=32,
                  addition_time_embed_dim=8, projection_class_embeddings_input_dim=24, num_frames=3)
_MID_UNET = dict(block_out_channels=(64, 128, 128),
                 down_block_types=("CrossAttnDownBlockSpatioTemporal",) * 2
                 + ("DownBlockSpatioTemporal",),
                 up_block_types=("UpBlockSpatioTemporal",) + ("CrossAttnUpBlockSpatioTemporal",) * 2,
                 layers_per_block=2, num_attention_heads=(2, 4, 4), cross_attention_dim=64,
                 addition_time_embed_dim=32, projection_class_embeddings_input_dim=96, num_frames=8)
_XT_VAE = dict(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
               layers_per_block=2, latent_channels=4)
_CLIP = dict(image_size=224, hidden_act="gelu", layer_norm_eps=1e-5)

SIZES = {
    "tiny": Size(_TINY_UNET,
                 dict(block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
                      layers_per_block=1, latent_channels=4),
                 dict(_CLIP, hidden_size=16, intermediate_size=24, num_hidden_layers=1,
                      num_attention_heads=2, patch_size=32, projection_dim=32),
                 16, 24, 3),
    "mid": Size(_MID_UNET,
                dict(block_out_channels=(64, 128, 128), down_block_types=("DownEncoderBlock2D",) * 3,
                     layers_per_block=2, latent_channels=4),
                dict(_CLIP, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, patch_size=32, projection_dim=64),
                64, 96, 8),
    # diffusers' UNetSpatioTemporalConditionModel defaults are SVD-XT's U-Net.
    "xt": Size(dict(sample_size=96), dict(_XT_VAE, sample_size=768),
               dict(_CLIP, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                    num_attention_heads=16, patch_size=14, projection_dim=1024),
               576, 1024, 25),
}


def threads_from_argv(argv) -> int:
  """--threads N of a benchmark's command line (default 1; 0: the libraries' defaults). With 1,
  XLA's CPU pools are made single-threaded here, so call this before jax is imported: on a
  shared CPU both libraries' pools oversubscribe the cores and time contention (torch's tiny
  U-Net forward took 7 s with 2 threads on a loaded 2-core machine, 0.2 s with 1)."""
  threads = int(argv[argv.index("--threads") + 1]) if "--threads" in argv else 1
  if threads == 1:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen="
                               "false intra_op_parallelism_threads=1").strip()
  return threads


def set_torch_threads(threads: int):
  import torch
  if threads:
    torch.set_num_threads(threads)


def spatial_compression(size: Size) -> int:
  return 2 ** (len(size.vae["block_out_channels"]) - 1)


def torch_model(part: str, size: Size, seed: int = 0):
  """The diffusers / transformers module of `part` ('unet' | 'vae' | 'image_encoder'), eval mode."""
  import torch
  torch.manual_seed(seed)
  if part == "unet":
    from diffusers import UNetSpatioTemporalConditionModel
    return UNetSpatioTemporalConditionModel(**size.unet).eval()
  if part == "vae":
    from diffusers import AutoencoderKLTemporalDecoder
    return AutoencoderKLTemporalDecoder(**size.vae).eval()
  if part == "image_encoder":
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection
    return CLIPVisionModelWithProjection(CLIPVisionConfig(**size.clip)).eval()
  raise ValueError(f"part {part!r}: expected unet, vae or image_encoder")


def convert(part: str, model, dtype: str = "float32", attention: str = "xla",
            remat_policy: str = "none"):
  """(our module, variables) holding `model`'s weights, through the part's converter."""
  import jax
  from conversion import clip_vision, driver, svd_unet, svd_vae
  from conversion.mapping import DictSource, unflatten
  from conversion.writer import parse_dtype
  state = {k: v.detach().float().cpu().numpy() for k, v in model.state_dict().items()
           if not k.endswith("position_ids")}
  raw = dict(model.config) if part != "image_encoder" else model.config.to_dict()
  if part == "unet":
    from sem_repa_jax.models.svd.unet import config_from_diffusers
    config = config_from_diffusers(raw)
    flat = svd_unet.convert_arrays(DictSource(state), config, parse_dtype(dtype))
    kind = svd_unet.KIND
  elif part == "vae":
    from sem_repa_jax.models.svd.vae import config_from_diffusers
    config = config_from_diffusers(raw)
    flat = svd_vae.convert_arrays(DictSource(state), config, parse_dtype(dtype))
    kind = svd_vae.KIND
  else:
    from sem_repa_jax.models.encoders.clip import config_from_transformers
    config = config_from_transformers(raw)
    flat = driver.convert_arrays(clip_vision.KIND, DictSource(state), config,
                                 clip_vision.rules(config), clip_vision.target_shapes,
                                 parse_dtype(dtype))
    kind = clip_vision.KIND
  module = driver.build(kind, dict(driver.standard_kwargs(config, dtype), attention=attention,
                                   remat_policy=remat_policy))
  return module, jax.tree_util.tree_map(jax.numpy.asarray, unflatten(flat))


def torch_device(model, dtype: str, device: Optional[str] = None):
  """The torch model on CUDA when torch has it (else CPU), in `dtype`; returns (model, device)."""
  import torch
  device = device or ("cuda" if torch.cuda.is_available() else "cpu")
  model = model.to(device)
  return (model if dtype == "float32" else model.to(getattr(torch, dtype))), device


def sync(device: str):
  import torch
  if device == "cuda":
    torch.cuda.synchronize()


def rng_inputs(shape, seed: int = 0) -> np.ndarray:
  return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def timing_figures(results: dict, ours: str = "jax", baseline: str = "diffusers") -> dict:
  """harness.alternate results as JSON: each side's medians, and ours / baseline (when both ran)."""
  from benchmarks import harness
  out = {k: t.as_dict() for k, t in results.items()}
  if ours in results and baseline in results:
    out["ratio_jax_over_diffusers"] = results[ours].median / results[baseline].median
  out["load_average"] = list(harness.load_average())
  out["loaded"] = harness.loaded()
  return out


def default_attention() -> str:
  import jax
  return "auto" if jax.default_backend() == "gpu" else "xla"


def command_line(doc: str, run, suite_entry, **extra_ints):
  """The SVD benchmarks' shared CLI: --tiny | (mid) | --xt (= suite_entry(False)), --repeats,
  --threads, --json PATH, and `extra_ints` ({name: default}) passed to run as keywords."""
  import argparse
  import json
  from benchmarks import harness
  p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
  g = p.add_mutually_exclusive_group()
  g.add_argument("--tiny", action="store_true", help="tiny config (CPU, seconds)")
  g.add_argument("--xt", action="store_true", help="SVD-XT shapes in bf16 (GPU)")
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--threads", type=int, default=1)
  for name, default in extra_ints.items():
    p.add_argument(f"--{name}", type=int, default=default)
  p.add_argument("--json", default="", help="also write the figures here")
  a = p.parse_args()
  extra = {name: getattr(a, name) for name in extra_ints}
  figures = suite_entry(False) if a.xt else run("tiny" if a.tiny else "mid", repeats=a.repeats,
                                                threads=a.threads, **extra)
  if a.json:
    harness.write_json(a.json, figures)
  else:
    print(json.dumps(figures, indent=1, default=str)[:2000])
