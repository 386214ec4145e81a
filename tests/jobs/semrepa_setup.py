"""The tiny SemanticREPA training config of the stage-1/2 tests (fixtures in conftest.py) and the
multi-host stage-2 worker."""
from configs import semrepa as semrepa_config


def training_config(records, workdir, job, steps, **finetune):
  c = semrepa_config.get_config()
  c.job, c.workdir, c.data.records = job, str(workdir), records
  c.align.num_steps = c.finetune.num_steps = steps
  c.data.batch_size = 8          # the 8 simulated devices form an 8-way data-parallel mesh
  c.log_every_steps = 2
  c.progress_bar = False
  c.checkpoint.async_save = False
  for k, v in finetune.items():
    c.finetune[k] = v
  return c



def stage2_config(records, workdir, alignment_dir, steps):
  """Stage 2 as the multi-host test runs it: a 1-layer backbone, data=2 x fsdp=4, one log line and
  one checkpoint at the end."""
  c = training_config(records, workdir, "finetune", steps, alignment_dir=alignment_dir)
  c.mesh.shape = (2, 4, 1)
  c.model.backbone.num_layers = 1
  c.log_every_steps = steps
  c.checkpoint.every_steps = 0
  return c
