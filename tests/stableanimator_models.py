"""Tiny random StableAnimator networks as users download them, for the training tests: the torch
references of benchmarks/stableanimator_torch.py (the official PoseNet and FusionFaceId, a
diffusers SVD U-Net with the official ID adapter processors), randomized, saved as pose_net.pth /
face_encoder.pth / unet.pth (+ the unet config folder), converted through the CLI, and the job
config that trains from them."""
import ml_collections
import torch

from benchmarks.stableanimator_torch import TorchFusionFaceId, TorchPoseNet, stableanimator_unet
from configs import stableanimator
from tests import parity
from tests.models.test_svd_unet import TINY

WIDTH = 128        # context width = CLIP width = face token width (2 perceiver heads of 64)
ID_DIM = 16
UNET = dict(TINY, cross_attention_dim=WIDTH)
LATENT, FRAMES, SIDE = 4, 2, 8       # latents (F, 8, 8, 4); pose images 64x64 (PoseNet /8)


def torch_models(unet=UNET, width=WIDTH, id_dim=ID_DIM):
  """(unet, pose_net, face_encoder), eval mode, every weight redrawn; `unet`: the diffusers
  U-Net's kwargs, `width` its cross_attention_dim (the CLIP and face token width)."""
  torch.manual_seed(0)
  model = parity.randomize(stableanimator_unet(**unet).eval(), seed=3)
  pose = parity.randomize(TorchPoseNet(out_channels=unet["block_out_channels"][0]).eval(), seed=1,
                          gain=2.0)
  face = parity.randomize(TorchFusionFaceId(dim=width, id_dim=id_dim, clip_dim=width).eval(),
                          seed=2)
  return model, pose, face


def convert_all(root, models):
  """The three saved as the official .pth files under ROOT and converted; {field: folder}."""
  unet, pose, face = models
  unet.save_config(str(root / "unet_config"))
  dirs = {}
  for name, model, kind, extra in (("unet", unet, "svd-unet", root / "unet_config" / "config.json"),
                                   ("pose_net", pose, "pose-net", None),
                                   ("face_encoder", face, "face-encoder", None)):
    src = root / f"{name}.pth"
    torch.save(model.state_dict(), src)
    dirs[f"{name}_dir"] = parity.convert(kind, src, root / name, config=extra)
  return dirs


def inference_models(root):
  """A model_dir for inference under ROOT: unet/, pose_net/, face_encoder/ (convert_all), vae/
  (a temporal VAE with SVD's /8 compression, so the PoseNet's /8 features fit its latents),
  image_encoder/ (CLIP vision, projection WIDTH) and arcface/ (a tiny IResNet at 112), each saved as
  users download it and converted; returns the torch (unet, pose_net, face_encoder, vae, clip)."""
  from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection
  from tests.models.test_arcface import FEATURES, LAYERS, WIDTHS, TorchIResNet
  from tests.svd_models import TINY_CLIP, tiny_vae_8x
  unet, pose, face = torch_models()
  convert_all(root, (unet, pose, face))
  vae = tiny_vae_8x()
  clip = parity.randomize(CLIPVisionModelWithProjection(CLIPVisionConfig(
      **dict(TINY_CLIP, projection_dim=WIDTH))).eval(), norms_only=True, spread=0.5)
  arcface = parity.randomize(TorchIResNet(LAYERS, WIDTHS, FEATURES, 112), spread=0.1,
                             gain=0.5 ** 0.5).eval()
  for model, kind, name in ((vae, "svd-vae", "vae"), (clip, "clip-vision", "image_encoder")):
    parity.convert_pretrained(model, kind, root / f"src_{name}", root / name)
  torch.save(arcface.state_dict(), root / "backbone.pth")
  parity.convert("arcface", root / "backbone.pth", root / "arcface")
  return unet, pose, face, vae, clip


def training_config(workdir, dirs=None, records="", steps=2):
  c = stableanimator.get_config()
  c.workdir = str(workdir)
  c.data.records = records
  c.data.prefetch = 0
  c.data.batch_size = 4           # the 8 simulated devices: 2 data x 2 fsdp x 2 tensor
  c.mesh.shape = (2, 2, 2)
  c.train.num_steps = steps
  c.progress_bar = False
  c.log_every_steps = 1
  c.checkpoint.async_save = False
  for field, path in (dirs or {}).items():
    c.model[field] = path
  c.model.face_encoder = ml_collections.ConfigDict(dict(id_embeddings_dim=ID_DIM,
                                                        proj_hidden_dim=2 * ID_DIM))
  return c
