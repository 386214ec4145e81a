"""Fields every job shares. Variant files import `get_config` from here and change what they need.

Run any config as `python -m sem_repa_jax.main --config configs/<name>.py --config.<field>=<value>`.
"""
import ml_collections

from sem_repa_jax.training.optimizer_config import default_config as optimizer_defaults


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.job = "demo"                # a module of sem_repa_jax/jobs/
  c.workdir = "runs/base"       # everything a job writes goes under here
  c.seed = 0

  # Devices: a mesh of named axes; -1 takes whatever devices remain. The product must equal the
  # number of devices (all hosts together).
  c.mesh = ml_collections.ConfigDict()
  c.mesh.axes = ("data", "fsdp", "tensor")
  c.mesh.shape = (-1, 1, 1)
  c.mesh.dcn_shape = ()          # several TPU slices / GPU islands: slices per mesh axis
  # Multi-host: call jax.distributed.initialize() before anything touches devices. On Cloud TPU
  # and SLURM the arguments are discovered; otherwise give them here.
  c.distributed = ml_collections.ConfigDict()
  c.distributed.initialize = False
  c.distributed.coordinator_address = ""
  c.distributed.num_processes = 0     # 0: discovered
  c.distributed.process_id = -1       # -1: discovered
  c.distributed.local_device_ids = ()  # () = JAX's choice; one process per GPU host: (0, ..., 7)

  # Logical axis names used by model code -> mesh axes. Model code never names a mesh axis.
  c.logical_axis_rules = (
      ("batch", ("data", "fsdp")),
      ("embed", "fsdp"),
      ("mlp", "tensor"),
      ("heads", "tensor"),
      ("kv", None),
      ("vocab", "tensor"),
      ("length", None),
      ("frames", None),
      ("height", None),
      ("width", None),
      ("channels", None),
      ("conv_out", "tensor"),
      ("conv_in", None),
      ("layers", None),
  )

  # Precision: compute dtype of activations and matmuls; parameters are kept in param_dtype.
  c.dtype = "float32"
  c.param_dtype = "float32"
  # 'xla' everywhere, 'cudnn' for flash attention on NVIDIA GPUs, 'auto' picks cudnn where it can.
  c.attention = "xla"
  # Activation rematerialization for scanned blocks: 'none', 'full', 'dots', 'dots_no_batch'.
  c.remat_policy = "none"

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every_steps = 500
  c.checkpoint.keep = 3
  c.checkpoint.async_save = True

  # AdamW (+ optional 8-bit moments, EMA); fields and defaults in training/optimizers.py.
  c.optimizer = optimizer_defaults()

  c.log_every_steps = 10
  c.progress_bar = True
  return c
