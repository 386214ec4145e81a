"""SemanticREPA objectives as pure functions (paper eqs. 2-12, /work/shared/porting-notes.md).

All functions take apply-closures for the alignment modules, `sam(latents, timestep) -> depth
latents` and `idm(latents, depth_latents) -> (B,f,D) unit embeddings`, so the same code serves stage
1 (modules trained) and stage 2 (modules frozen: the caller closes over stop_gradient'ed variables).

Noise conventions (v-prediction, as CogVideoX): z_t = sqrt(ab_t) z0 + sqrt(1 - ab_t) eps,
v = sqrt(ab_t) eps - sqrt(1 - ab_t) z0, z0_hat = sqrt(ab_t) z_t - sqrt(1 - ab_t) v_hat.
Depth latents at a noise level use the SAME eps as the video latents, so that the noisy structure
target is predictable from the noisy video (d_t - z_t = sqrt(ab_t) (d0 - z0)).
"""
import dataclasses

import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class SemRepaLossConfig:
  lambda_structure: float = 0.01   # lambda_S
  lambda_id: float = 1.0           # lambda_ID
  structure_input: str = "clean"   # 'clean': L_S(z0_hat) (paper's final choice); 'noisy': L_S(z_{t-1})

  def __post_init__(self):
    if self.structure_input not in ("clean", "noisy"):
      raise ValueError(f"structure_input {self.structure_input!r}: expected 'clean' or 'noisy'")


def _bcast(x, ref):
  return jnp.reshape(x, x.shape + (1,) * (ref.ndim - x.ndim)).astype(jnp.float32)


def add_noise(z0, eps, ab):
  """z_t for per-example alpha-bar `ab` (B,)."""
  a = _bcast(ab, z0)
  return jnp.sqrt(a) * z0 + jnp.sqrt(1.0 - a) * eps


def v_target(z0, eps, ab):
  a = _bcast(ab, z0)
  return jnp.sqrt(a) * eps - jnp.sqrt(1.0 - a) * z0


def clean_from_v(z_t, v_hat, ab):
  a = _bcast(ab, z_t)
  return jnp.sqrt(a) * z_t - jnp.sqrt(1.0 - a) * v_hat


def ddim_previous(z_t, z0_hat, ab, ab_prev):
  """One deterministic DDIM step z_t -> z_{t-1} given the predicted clean latents."""
  a, ap = _bcast(ab, z_t), _bcast(ab_prev, z_t)
  eps_hat = (z_t - jnp.sqrt(a) * z0_hat) / jnp.sqrt(jnp.maximum(1.0 - a, 1e-12))
  return jnp.sqrt(ap) * z0_hat + jnp.sqrt(1.0 - ap) * eps_hat


def mse(a, b):
  return jnp.mean(jnp.square(a.astype(jnp.float32) - b.astype(jnp.float32)))


def masked_l1(pred, target, mask):
  """Mean |pred - target| over embedding dims and over the frames where mask is True.

  Frames without a face carry no target: they are excluded, not compared against zeros. A batch
  with no face at all gives 0 (and no gradient).
  """
  per_frame = jnp.mean(jnp.abs(pred.astype(jnp.float32) - target.astype(jnp.float32)), axis=-1)
  m = mask.astype(jnp.float32)
  return jnp.sum(per_frame * m) / jnp.maximum(jnp.sum(m), 1.0)


def alignment_losses(sam, idm, z0, d0, face_embeds, face_mask, *, structure_input="clean",
                     timestep=None, eps=None, ab=None):
  """Stage 1: L_SAM (MSE to depth latents) and L_IDM (L1 to pooled, normalized teacher embeddings).

  clean: SAM(z0, 0) vs d0. noisy: SAM(z_t, t) vs d_t with timestep/eps/ab given.
  The ID module always sees clean latents and the ground-truth depth latents (paper sec. 4.2.2).
  """
  b = z0.shape[0]
  if structure_input == "clean":
    d_hat = sam(z0, jnp.zeros((b,), jnp.int32))
    l_sam = mse(d_hat, d0)
  else:
    d_hat = sam(add_noise(z0, eps, ab), timestep)
    l_sam = mse(d_hat, add_noise(d0, eps, ab))
  l_idm = masked_l1(idm(z0, d0), face_embeds, face_mask)
  return {"sam_mse": l_sam, "idm_l1": l_idm}


def finetune_losses(v_hat, z_t, z0, d0, eps, ab, ab_prev, timestep, face_mask, sam, idm,
                    config: SemRepaLossConfig):
  """Stage 2: L = L_t + lambda_S L_S + lambda_ID L_ID on the transformer's prediction v_hat.

  L_t is the v-MSE, equal to mean((z0_hat - z0)^2 / (1 - ab)) (porting notes).
  clean: d_hat = SAM(z0_hat, 0), L_S = MSE(d_hat, d0), L_ID = L1(IDM(z0_hat, d_hat), IDM(z0, d0)).
  noisy: z_{t-1} = DDIM(z_t, z0_hat), L_S = MSE(SAM(z_{t-1}, t-1), d_{t-1}),
         L_ID = L1(IDM(z0_hat, d0), IDM(z0, d0)) (ground-truth depth, paper sec. 4.3).
  face_mask: (B,f) latent frames with a face; L_ID is averaged over those only.
  """
  v = v_target(z0, eps, ab)
  l_t = mse(v_hat, v)
  z0_hat = clean_from_v(z_t, v_hat, ab)
  b = z0.shape[0]
  if config.structure_input == "clean":
    d_hat = sam(z0_hat, jnp.zeros((b,), jnp.int32))
    l_s = mse(d_hat, d0)
    id_depth = d_hat
  else:
    z_prev = ddim_previous(z_t, z0_hat, ab, ab_prev)
    d_prev = add_noise(d0, eps, ab_prev)
    l_s = mse(sam(z_prev, jnp.maximum(timestep - 1, 0)), d_prev)
    id_depth = d0
  l_id = masked_l1(idm(z0_hat, id_depth), idm(z0, d0), face_mask)
  total = l_t + config.lambda_structure * l_s + config.lambda_id * l_id
  return total, {"loss": total, "loss_diffusion": l_t, "loss_structure": l_s, "loss_id": l_id}
