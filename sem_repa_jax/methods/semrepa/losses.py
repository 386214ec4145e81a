"""SemanticREPA objectives as pure functions (paper eqs. 2-12, /work/shared/porting-notes.md).

All functions take apply-closures for the alignment modules, `sam(latents, timestep) -> depth
latents` and `idm(latents, depth_latents) -> (B,f,D) unit embeddings`, so the same code serves stage
1 (modules trained) and stage 2 (modules frozen: the caller closes over stop_gradient'ed variables).

Noise conventions are CogVideoX's (v-prediction, sem_repa_jax.diffusion.parameterization):
z_t = sqrt(ab_t) z0 + sqrt(1 - ab_t) eps, v = sqrt(ab_t) eps - sqrt(1 - ab_t) z0.
Depth latents at a noise level use the SAME eps as the video latents, so the noisy structure target
is predictable from the noisy video (d_t - z_t = sqrt(ab_t) (d0 - z0)).
"""
import dataclasses

import jax.numpy as jnp

from sem_repa_jax.diffusion import parameterization, schedules
from sem_repa_jax.diffusion.losses import denoising_loss, mse


@dataclasses.dataclass(frozen=True)
class SemRepaLossConfig:
  lambda_structure: float = 0.01   # lambda_S
  lambda_id: float = 1.0           # lambda_ID
  structure_input: str = "clean"   # 'clean': L_S(z0_hat) (paper's final choice); 'noisy': L_S(z_{t-1})
  # L_t weighs the x0 error by 1 / (1 - ab_t) (the v-MSE). A positive cap bounds that weight, so the
  # near-clean timesteps (weight up to ~1200) stop outweighing the noisy ones, where the motion is
  # decided. 0: no cap, the paper's L_t. (JiT, Li & He 2025, clamps the same weight.)
  max_diffusion_weight: float = 0.0

  def __post_init__(self):
    if self.structure_input not in ("clean", "noisy"):
      raise ValueError(f"structure_input {self.structure_input!r}: expected 'clean' or 'noisy'")
    if not self.max_diffusion_weight >= 0:
      raise ValueError(f"max_diffusion_weight {self.max_diffusion_weight!r}: expected >= 0 (0: no cap)")


def previous_alpha_bar(alphas_cumprod, t):
  """alpha-bar at t-1 (1.0 before the first training timestep)."""
  table = jnp.concatenate([jnp.ones((1,), jnp.float32), jnp.asarray(alphas_cumprod, jnp.float32)])
  return table[jnp.asarray(t)]


def ddim_previous(alphas_cumprod, z_t, v_hat, t):
  """One deterministic DDIM step of the training schedule, z_t -> z_{t-1}, from the prediction."""
  z0_hat = parameterization.v_to_x0(alphas_cumprod, z_t, v_hat, t)
  eps_hat = parameterization.v_to_eps(alphas_cumprod, z_t, v_hat, t)
  ab_prev = previous_alpha_bar(alphas_cumprod, t).reshape((-1,) + (1,) * (z_t.ndim - 1))
  return jnp.sqrt(ab_prev) * z0_hat + jnp.sqrt(1.0 - ab_prev) * eps_hat


def noised_to_previous(alphas_cumprod, x0, eps, t):
  """x_{t-1} = sqrt(ab_{t-1}) x0 + sqrt(1 - ab_{t-1}) eps (x0 itself at t = 0)."""
  ab_prev = previous_alpha_bar(alphas_cumprod, t).reshape((-1,) + (1,) * (x0.ndim - 1))
  return jnp.sqrt(ab_prev) * x0 + jnp.sqrt(1.0 - ab_prev) * eps


def masked_l1(pred, target, mask):
  """Mean |pred - target| over embedding dims and over the frames where mask is True.

  Frames without a face carry no target: they are excluded, not compared against zeros. A batch
  with no face at all gives 0 (and no gradient).
  """
  per_frame = jnp.mean(jnp.abs(pred.astype(jnp.float32) - target.astype(jnp.float32)), axis=-1)
  m = mask.astype(jnp.float32)
  return jnp.sum(per_frame * m) / jnp.maximum(jnp.sum(m), 1.0)


def alignment_losses(sam, idm, z0, d0, face_embeds, face_mask, *, structure_input="clean",
                     alphas_cumprod=None, timestep=None, eps=None):
  """Stage 1: L_SAM (MSE to depth latents) and L_IDM (L1 to pooled, normalized teacher embeddings).

  clean: SAM(z0, 0) vs d0. noisy: SAM(z_t, t) vs d_t (alphas_cumprod, timestep, eps given).
  The ID module always sees clean latents and the ground-truth depth latents (paper sec. 4.2.2).
  """
  b = z0.shape[0]
  if structure_input == "clean":
    d_hat = sam(z0, jnp.zeros((b,), jnp.int32))
    l_sam = mse(d_hat, d0)
  elif structure_input == "noisy":
    d_hat = sam(schedules.add_noise(alphas_cumprod, z0, eps, timestep), timestep)
    l_sam = mse(d_hat, schedules.add_noise(alphas_cumprod, d0, eps, timestep))
  else:
    raise ValueError(f"structure_input {structure_input!r}: expected 'clean' or 'noisy'")
  l_idm = masked_l1(idm(z0, d0), face_embeds, face_mask)
  return {"sam_mse": l_sam, "idm_l1": l_idm}


def finetune_losses(v_hat, z_t, z0, d0, eps, timestep, face_mask, sam, idm,
                    config: SemRepaLossConfig, alphas_cumprod):
  """Stage 2: L = L_t + lambda_S L_S + lambda_ID L_ID on the transformer's prediction v_hat.

  L_t is the v-MSE, equal to mean((z0_hat - z0)^2 / (1 - ab)) (porting notes); with
  config.max_diffusion_weight > 0 it is mean(min(1 / (1 - ab), max_diffusion_weight) (z0_hat - z0)^2).
  clean: d_hat = SAM(z0_hat, 0), L_S = MSE(d_hat, d0), L_ID = L1(IDM(z0_hat, d_hat), IDM(z0, d0)).
  noisy: z_{t-1} = DDIM(z_t, v_hat), L_S = MSE(SAM(z_{t-1}, t-1), d_{t-1}),
         L_ID = L1(IDM(z0_hat, d0), IDM(z0, d0)) (ground-truth depth, paper sec. 4.3).
  face_mask: (B,f) latent frames with a face; L_ID is averaged over those only.
  Returns (total, {name: scalar}).
  """
  z0_hat = parameterization.v_to_x0(alphas_cumprod, z_t, v_hat, timestep)
  l_t = denoising_loss(v_hat, z0_hat, z0, eps, alphas_cumprod, timestep, config.max_diffusion_weight)
  if config.structure_input == "clean":
    d_hat = sam(z0_hat, jnp.zeros_like(timestep))
    l_s = mse(d_hat, d0)
    id_depth = d_hat
  else:
    z_prev = ddim_previous(alphas_cumprod, z_t, v_hat, timestep)
    d_prev = noised_to_previous(alphas_cumprod, d0, eps, timestep)
    l_s = mse(sam(z_prev, jnp.maximum(timestep - 1, 0)), d_prev)
    id_depth = d0
  l_id = masked_l1(idm(z0_hat, id_depth), idm(z0, d0), face_mask)
  total = l_t + config.lambda_structure * l_s + config.lambda_id * l_id
  return total, {"loss_diffusion": l_t, "loss_structure": l_s, "loss_id": l_id}
