"""Job 'finetune': SemanticREPA stage 2. Fine-tunes the CogVideoX transformer with
L_t + lambda_S L_S + lambda_ID L_ID (v-prediction, or the network's output read as x0 or eps and
converted to v: config.diffusion.prediction_type; L_S and L_ID through the frozen alignment
modules of stage 1 on the predicted clean latents), with CogVideoX image-to-video conditioning:
the cached noise-augmented first-frame latents, zero-padded over the remaining latent frames and
concatenated on channels, dropped with probability image_dropout; text embeddings (when cached)
dropped to zeros with probability text_dropout.
"""
import jax
import jax.numpy as jnp
from absl import logging

from sem_repa_jax.diffusion import parameterization, schedules
from sem_repa_jax.jobs import _semrepa
from sem_repa_jax.methods.semrepa import factory
from sem_repa_jax.methods.semrepa.frames import pool_face_embeddings
from sem_repa_jax.methods.semrepa.losses import SemRepaLossConfig, finetune_losses
from sem_repa_jax.methods.semrepa.model import ALIGNMENT_MODULES, ALIGNMENT_PREFIXES
from sem_repa_jax.training.checkpoint import load_into
from sem_repa_jax.training.fit import fit


def image_conditioned(backbone, latent_channels: int) -> bool:
  if backbone.in_channels == 2 * latent_channels:
    return True
  if backbone.in_channels == latent_channels:
    return False
  raise ValueError(f"backbone in_channels={backbone.in_channels} fits neither text-to-video "
                   f"({latent_channels}) nor image-to-video ({2 * latent_channels}) latents")


def model_input(z_t, image_latents, keep_image):
  """concat([z_t, image latents of frame 0 then zeros], channels); keep_image (B,) bool."""
  img = jnp.where(keep_image[:, None, None, None, None], image_latents, 0.0).astype(z_t.dtype)
  pad = jnp.zeros(z_t.shape[:1] + (z_t.shape[1] - img.shape[1],) + z_t.shape[2:], z_t.dtype)
  return jnp.concatenate([z_t, jnp.concatenate([img, pad], axis=1)], axis=-1)


def make_loss_fn(model, config, alphas_cumprod):
  f = config.finetune
  loss_cfg = SemRepaLossConfig(f.lambda_structure, f.lambda_id, f.structure_input,
                               f.max_diffusion_weight)
  i2v = image_conditioned(model.backbone, config.model.latent_channels)
  ofs = model.backbone.ofs_embed_dim
  tc = config.model.temporal_compression
  num_t = len(alphas_cumprod)
  prediction = config.diffusion.get("prediction_type", "v_prediction")

  def loss_fn(variables, batch, rng):
    z0, d0 = batch["video_latents"], batch["depth_latents"]
    b = z0.shape[0]
    k_t, k_eps, k_img, k_txt = jax.random.split(rng, 4)
    t = jax.random.randint(k_t, (b,), 0, num_t)
    eps = jax.random.normal(k_eps, z0.shape, z0.dtype)
    z_t = schedules.add_noise(alphas_cumprod, z0, eps, t)
    x = z_t
    if i2v:
      x = model_input(z_t, batch["image_latents"],
                      jax.random.uniform(k_img, (b,)) >= f.image_dropout)
    text = batch.get("text_embeds")
    if text is not None:
      keep = jax.random.uniform(k_txt, (b,)) >= f.text_dropout
      text = jnp.where(keep[:, None, None], text, 0.0)
    out = model.apply(variables, x, text, t, jnp.full((1,), 2.0) if ofs else None,
                      method=model.denoise)
    v_hat = parameterization.prediction_to_v(alphas_cumprod, z_t, out, t, prediction)
    _, mask = pool_face_embeddings(batch["face_embeds"], batch["face_present"], tc)
    return finetune_losses(
        v_hat, z_t, z0, d0, eps, t, mask,
        lambda z, tt: model.apply(variables, z, tt, method=model.predict_depth),
        lambda z, d: model.apply(variables, z, d, method=model.predict_identity),
        loss_cfg, alphas_cumprod)
  return loss_fn


def run(config, dataset=None):
  """Trains to config.finetune.num_steps (resuming from the workdir's last checkpoint) and returns
  the final TrainState. `dataset`: this process's batches in place of config.data.records' (a grain
  dataset, as `_semrepa.record_dataset` gives)."""
  f, m = config.finetune, config.model
  if not f.alignment_dir:
    raise ValueError("config.finetune.alignment_dir is empty: give the stage-1 export "
                     f"(<align workdir>/{_semrepa.ALIGNMENT_DIRNAME})")
  model = factory.build(**factory.module_kwargs(config, with_backbone=True))
  ab = factory.alphas_cumprod(config)
  dataset = _semrepa.record_dataset(config) if dataset is None else dataset
  ex = _semrepa.example_batch(dataset)
  z = ex["video_latents"]
  x = model_input(z, ex["image_latents"], jnp.ones((1,), bool)) \
      if image_conditioned(model.backbone, m.latent_channels) else z
  text = ex.get("text_embeds")
  ofs = jnp.ones((1,)) if model.backbone.ofs_embed_dim else None
  init_args = (z, jnp.zeros((1,), jnp.int32), x, text, ofs)
  # diffusers keeps the learned positional table as a buffer that fine-tuning does not train.
  has_buffers = "buffers" in jax.eval_shape(model.init, jax.random.key(0), *init_args)
  frozen = ALIGNMENT_PREFIXES + (("buffers",) if has_buffers else ())

  def prepare(state):
    state = load_into(state, f.alignment_dir, "frozen", only=ALIGNMENT_MODULES)
    if m.pretrained_transformer:
      state = load_into(state, m.pretrained_transformer, "params", "transformer")
      if has_buffers:
        state = load_into(state, m.pretrained_transformer, "frozen", "transformer")
    return state

  state, _ = fit(config, model, make_loss_fn(model, config, ab), init_args, dataset=dataset,
                 frozen_prefixes=frozen, prepare_state=prepare, num_steps=f.num_steps)
  logging.info("stage 2 done at step %d; checkpoints in %s/checkpoints", int(state.step),
               config.workdir)
  return state
