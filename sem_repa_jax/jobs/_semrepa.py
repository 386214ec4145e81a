"""What the SemanticREPA jobs (align = stage 1, finetune = stage 2, demo) share: the record dataset
and the exports of a trained stage. The networks come from methods/semrepa/factory.py, the driver
is training/fit.py.

Config fields read here are documented in configs/semrepa.py.
"""
import os

import jax

from sem_repa_jax.jobs import _records
from sem_repa_jax.methods.semrepa import factory
from sem_repa_jax.models.pretrained import save_pretrained
from sem_repa_jax.training.checkpoint import restore_variables

# Record keys the training steps read (docs/data.md); everything else stays on the host.
BATCH_KEYS = ("video_latents", "depth_latents", "image_latents", "face_embeds", "face_present")
ALIGNMENT_DIRNAME = "alignment_modules"


def record_dataset(config, shard_index: int | None = None, shard_count: int | None = None):
  """This process's shard of the SemanticREPA records (jobs/_records.py), with text_embeds when
  config.data.text_embeds."""
  keys = list(BATCH_KEYS) + (["text_embeds"] if config.data.text_embeds else [])
  return _records.record_dataset(config, keys, shard_index, shard_count)


example_batch = _records.example_batch


def export_alignment_modules(config, state) -> str:
  """Writes the trained SAM and IDM as a load_pretrained folder: <workdir>/alignment_modules."""
  kwargs = factory.module_kwargs(config, with_backbone=False)
  variables = jax.device_get(state.variables())
  dst = os.path.join(config.workdir, ALIGNMENT_DIRNAME)
  if jax.process_index() == 0:
    save_pretrained(dst, kind="semrepa-alignment", module_kwargs=kwargs, variables=variables,
                    source=os.path.abspath(config.workdir))
  return dst


def export_backbone(config, dst: str, ema: bool = False) -> str:
  """Writes the CogVideoX transformer of a stage-2 workdir's last checkpoint (its EMA with `ema`)
  as a load_pretrained folder of the kind the CogVideoX converter writes, so that
  `model.pretrained_transformer = dst` starts another stage 2 from it."""
  step, variables = restore_variables(config.workdir, ema=ema)
  backbone = {col: tree["transformer"] for col, tree in variables.items()
              if isinstance(tree, dict) and "transformer" in tree}
  if "params" not in backbone:
    raise ValueError(f"{config.workdir}/checkpoints/{step} holds no transformer: not a stage-2 run")
  if jax.process_index() == 0:
    save_pretrained(dst, kind="cogvideox-transformer", module_kwargs=factory.backbone_kwargs(config),
                    variables=backbone,
                    source=f"{os.path.abspath(config.workdir)} step {step}{' (EMA)' if ema else ''}")
  return dst
