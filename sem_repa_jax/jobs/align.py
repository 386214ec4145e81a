"""Job 'align': SemanticREPA stage 1. Trains the Structure Alignment Module (video latents -> depth
latents, MSE) and the ID Alignment Module (video + depth latents -> per-latent-frame face
embeddings, L1 to the pooled teacher embeddings, faceless frames masked out) from cached latents,
then exports both to <workdir>/alignment_modules for stage 2.
"""
import jax
import jax.numpy as jnp
from absl import logging

from sem_repa_jax.jobs import _semrepa
from sem_repa_jax.methods.semrepa import factory
from sem_repa_jax.methods.semrepa.frames import pool_face_embeddings
from sem_repa_jax.methods.semrepa.losses import alignment_losses
from sem_repa_jax.training.fit import fit


def make_loss_fn(model, config, alphas_cumprod):
  a = config.align
  tc = config.model.temporal_compression
  num_t = len(alphas_cumprod)

  def loss_fn(variables, batch, rng):
    z0, d0 = batch["video_latents"], batch["depth_latents"]
    targets, mask = pool_face_embeddings(batch["face_embeds"], batch["face_present"], tc)
    k_t, k_eps = jax.random.split(rng)
    t = jax.random.randint(k_t, (z0.shape[0],), 0, num_t)
    eps = jax.random.normal(k_eps, z0.shape, z0.dtype)
    terms = alignment_losses(
        lambda z, tt: model.apply(variables, z, tt, method=model.predict_depth),
        lambda z, d: model.apply(variables, z, d, method=model.predict_identity),
        z0, d0, targets, mask, structure_input=a.structure_input, alphas_cumprod=alphas_cumprod,
        timestep=t, eps=eps)
    loss = a.lambda_structure * terms["sam_mse"] + a.lambda_id * terms["idm_l1"]
    return loss, terms
  return loss_fn


def run(config) -> None:
  model = factory.build(**factory.module_kwargs(config, with_backbone=False))
  ab = factory.alphas_cumprod(config)
  dataset = _semrepa.record_dataset(config)
  ex = _semrepa.example_batch(dataset)
  init_args = (ex["video_latents"], jnp.zeros((1,), jnp.int32))
  state, _ = fit(config, model, make_loss_fn(model, config, ab), init_args, dataset=dataset,
                 num_steps=config.align.num_steps)
  dst = _semrepa.export_alignment_modules(config, state)
  logging.info("stage 1 done: alignment modules in %s", dst)
