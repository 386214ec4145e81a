"""Pretrains the demo's backbone, the stand-in for CogVideoX-5B-I2V's pretrained weights.

SemanticREPA fine-tunes a pretrained image-to-video model; no such model exists offline, and a
tiny one trained from scratch within the demo's CPU minutes learns to copy the first frame but
not yet how figures move (docs/demo.md). This config trains the demo's backbone for longer, on
other synthetic clips and identities (seed 2; the demo trains on seed 0 and holds out seed 1),
with the plain diffusion loss (lambda_S = lambda_ID = 0: the base model knows nothing of
SemanticREPA), and exports its EMA weights in the converter's format:

  python -m sem_repa_jax.main --config configs/demo_pretrain.py      # ~27 min on 2 CPU cores
  rm -rf assets/demo_backbone && cp -r runs/demo_pretrain/backbone assets/demo_backbone

It runs the demo job, so its report (runs/demo_pretrain/report.html) shows the pretrained
model's own samples on held-out clips (seed 3).
"""
import ml_collections

from configs import demo


def get_config() -> ml_collections.ConfigDict:
  c = demo.get_config()
  c.workdir = "runs/demo_pretrain"
  c.seed = 2
  c.demo.train_clips = 512
  c.demo.export_backbone = "runs/demo_pretrain/backbone"
  c.model.pretrained_transformer = ""     # from scratch
  c.finetune.lambda_structure = 0.0
  c.finetune.lambda_id = 0.0
  c.finetune.num_steps = 15000
  c.demo.finetune_learning_rate = 0.0     # stage 2 at optimizer.learning_rate, as stage 1
  c.checkpoint.every_steps = 2500
  return c
