"""Tiny random VividPose networks for the pipeline and job tests: the 'tiny' preset's VividPose and
ReferenceNet initialized in JAX and saved by kind (unet/ svd-unet, pose_controller/
vividpose-pose-controller, id_controller/ vividpose-id-controller, reference_net/ sd-unet), with a
temporal VAE of SVD's /8 compression and a CLIP vision encoder converted from diffusers /
transformers (tests/svd_models.py): the folders configs/sample_vividpose.py expects."""
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from sem_repa_jax.methods.vividpose.model import PRESETS, build_models, example_inputs
from sem_repa_jax.models import save_pretrained
from tests import parity

CFG = PRESETS["tiny"]
ID_DIM = CFG.id_controller.id_embeddings_dim
FAST = {"xla_backend_optimization_level": 0}


def _initialized(init, *args):
  return nn.meta.unbox(jax.jit(init).lower(*args).compile(FAST)(*args))


def initial_variables():
  """(model, variables, reference_net, reference_vars): new controllers (zero layers at zero)."""
  model, reference_net = build_models(CFG)
  key, inputs = jax.random.key(0), example_inputs(CFG)
  variables = _initialized(lambda k, inp: model.init(k, **inp), key, inputs)
  h = CFG.height // 8
  ref_args = (jax.random.key(1), jnp.zeros((1, h, h, 4)), jnp.zeros((1,)),
              jnp.zeros((1, 1, CFG.unet.cross_attention_dim[0])))
  return model, variables, reference_net, _initialized(reference_net.init, *ref_args)


def save_parts(root, variables, reference_vars) -> dict:
  """The three VividPose parts and the ReferenceNet as folders of their kinds under ROOT."""
  parts = (("unet", "svd-unet", CFG.unet, variables["params"]["unet"]),
           ("pose_controller", "vividpose-pose-controller", CFG.pose_controller,
            variables["params"]["pose_controller"]),
           ("id_controller", "vividpose-id-controller", CFG.id_controller,
            variables["params"]["id_controller"]),
           ("reference_net", "sd-unet", CFG.reference_net, reference_vars["params"]))
  for name, kind, config, params in parts:
    save_pretrained(str(root / name), kind=kind, module_kwargs=dict(config=dataclasses.asdict(
        config)), variables={"params": params})
  return {name: str(root / name) for name, *_ in parts}


def convert_vae_and_clip(root):
  """vae/ (svd-vae, /8) and image_encoder/ (clip-vision, projection = the tiny U-Net's width)."""
  from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection
  from tests.svd_models import TINY_CLIP, tiny_vae_8x
  vae = tiny_vae_8x()                 # seeds torch's generator: the CLIP init after it is fixed
  clip = parity.randomize(CLIPVisionModelWithProjection(CLIPVisionConfig(**dict(
      TINY_CLIP, projection_dim=CFG.unet.cross_attention_dim[0]))).eval(), norms_only=True,
      spread=0.5)
  for model, kind, name in ((vae, "svd-vae", "vae"), (clip, "clip-vision", "image_encoder")):
    parity.convert_pretrained(model, kind, root / f"src_{name}", root / name)
