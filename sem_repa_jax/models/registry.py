"""Model kinds: the name a saved folder records (config.json `kind`) -> the factory that builds it.

A folder written by `python -m conversion` or by a job names its kind; `load_pretrained` builds the
module from this table, so moving a factory is a change here, never a broken folder. The table is
data (factory strings, imported on use), so it may name factories of any layer. Folders written
before the table existed name their factory directly; `FORMER_FACTORIES` maps those strings that no
longer import to their kind.
"""

FACTORIES = {
    "cogvideox-transformer": "sem_repa_jax.models.cogvideox.transformer:build",
    "cogvideox-vae": "sem_repa_jax.models.cogvideox.vae:cogvideox_vae",
    "t5-encoder": "sem_repa_jax.models.encoders.t5:build_t5_encoder",
    "clip-vision": "sem_repa_jax.models.encoders.clip:build_clip_vision",
    "clip": "sem_repa_jax.models.encoders.clip_model:build",
    "arcface": "sem_repa_jax.models.encoders.arcface:build_iresnet",
    "svd-vae": "sem_repa_jax.models.svd.vae:build",
    "semrepa-alignment": "sem_repa_jax.methods.semrepa.factory:build",
    "svd-unet": "sem_repa_jax.models.svd.unet:build",
    "lpips": "sem_repa_jax.models.metrics.lpips:build",
    "fid-inception": "sem_repa_jax.models.metrics.inception:build",
    "i3d": "sem_repa_jax.models.metrics.i3d:build",
    "raft": "sem_repa_jax.models.metrics.raft:build",
    "pose-net": "sem_repa_jax.methods.stableanimator.posenet:build",
    "face-encoder": "sem_repa_jax.methods.stableanimator.face_encoder:build",
    "sd-unet": "sem_repa_jax.models.sd.unet:build",
    "pose-aligner": "sem_repa_jax.methods.pose_alignment.aligner:build",
    "vividpose-pose-controller": "sem_repa_jax.methods.vividpose.pose_controller:build",
    "vividpose-id-controller": "sem_repa_jax.methods.vividpose.id_controller:build",
}

FORMER_FACTORIES = {
    "sem_repa_jax.jobs._semrepa:build": "semrepa-alignment",
}


def factory_of(kind: str) -> str:
  """The 'package.module:callable' that builds modules of `kind`."""
  if kind not in FACTORIES:
    raise KeyError(f"unknown model kind {kind!r}; known kinds: {', '.join(sorted(FACTORIES))}")
  return FACTORIES[kind]


def resolve(kind: str, recorded_factory: str) -> str:
  """The factory to build a saved folder with: its kind's entry, else what it recorded (a former
  factory string maps to its kind's current one)."""
  if kind in FACTORIES:
    return FACTORIES[kind]
  return FACTORIES.get(FORMER_FACTORIES.get(recorded_factory, ""), recorded_factory)
