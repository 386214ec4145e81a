"""ArcFace training (Deng et al. 2019): the additive angular margin loss over training identities.

The recognizer is the project's IResNet (models/encoders/arcface.py), so the trained network is a
drop-in ArcFace. That module always runs its BatchNorms on their running statistics (it is frozen
in every other use), so here the statistics are frozen too and the BN scales and shifts train as
plain affine layers. Frozen at their initial values (mean 0, variance 1) they would normalize
nothing; `calibrate_batchnorm` sets them once, before the first step, to the statistics of a batch
of training faces (a data-dependent initialization, as in Salimans & Kingma 2016), so every BN
starts out normalizing its input as a training-mode BN would.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from sem_repa_jax.models.encoders.arcface import IResNet


class ArcFaceTrainer(nn.Module):
  """The recognizer ('backbone') and the ArcFace head: one weight vector per training identity
  ('identity_centers', (num_features, num_identities)). `__call__` gives the cosines (B, N) of the
  faces' embeddings to every center; `embed` the embeddings alone."""
  backbone: IResNet
  num_identities: int
  param_dtype: Any = jnp.float32

  def setup(self):
    self.identity_centers = self.param(
        "identity_centers", nn.with_logical_partitioning(nn.initializers.normal(0.01),
                                                         ("embed", "vocab")),
        (self.backbone.config.num_features, self.num_identities), self.param_dtype)

  def embed(self, faces):
    return self.backbone(faces)

  def __call__(self, faces):
    e = self.backbone(faces)
    e = e / jnp.linalg.norm(e, axis=-1, keepdims=True).clip(1e-6)
    w = self.identity_centers.astype(jnp.float32)
    w = w / jnp.linalg.norm(w, axis=0, keepdims=True).clip(1e-6)
    return e @ w


def arcface_loss(cosines, labels, scale: float, margin: float):
  """Softmax cross-entropy of s * cos(theta_y + m) for the true identity, s * cos(theta_j) for the
  others (insightface's ArcFace). Where theta_y + m would pass pi the target logit is
  cos(theta_y) - m sin(m) instead (insightface's `easy_margin=False`), so it keeps decreasing in
  theta_y. Returns (mean loss, accuracy of the unmargined cosines)."""
  cos = jnp.clip(cosines, -1.0 + 1e-7, 1.0 - 1e-7)
  onehot = jax.nn.one_hot(labels, cos.shape[-1], dtype=cos.dtype)
  cos_y = jnp.sum(cos * onehot, -1)
  sin_y = jnp.sqrt(1.0 - cos_y ** 2)
  phi = cos_y * np.cos(margin) - sin_y * np.sin(margin)
  phi = jnp.where(cos_y > np.cos(np.pi - margin), phi, cos_y - margin * np.sin(margin))
  logits = scale * (cos + onehot * (phi - cos_y)[:, None])
  loss = -jnp.mean(jnp.sum(onehot * jax.nn.log_softmax(logits), -1))
  accuracy = jnp.mean((jnp.argmax(cos, -1) == labels).astype(jnp.float32))
  return loss, accuracy


def _bn_outputs(module, method):
  """(a jitted (variables, faces) -> {BN path: its output}, the BN paths in the order the network
  calls them (filled by the first call: jit returns dicts in key order, not in call order))."""
  order = []

  def outputs(variables, faces):
    _, state = module.apply(variables, faces, method=method,
                            capture_intermediates=lambda m, _: isinstance(m, nn.BatchNorm),
                            mutable=["intermediates"])
    flat = traverse_util.flatten_dict(state["intermediates"], sep="/")
    out = {k[:-len("/__call__")]: v[0] for k, v in flat.items()}
    order[:] = list(out)
    return out
  return jax.jit(outputs), order


def calibrate_batchnorm(module, variables, faces, method=None):
  """`variables` with every BatchNorm's running mean and variance set so that, with its current
  scale and shift at 1 and 0, its output on `faces` has mean 0 and variance 1 per channel.

  A BN's input depends on the BNs before it, so they are set one at a time in the order the
  network calls them, each from a forward pass through the ones already set (setting all at once
  from one pass sets the later ones on uncalibrated inputs, and repeating that diverges). BNs in
  scanned blocks (stages of more than one block) are not reached: an error.
  """
  variables = jax.tree.map(np.asarray, variables)
  flat = traverse_util.flatten_dict(dict(variables["batch_stats"]), sep="/")
  eps = (module.backbone if hasattr(module, "backbone") else module).config.bn_eps
  outputs, order = _bn_outputs(module, method)
  outputs(variables, faces)
  missed = sorted({k.rsplit("/", 1)[0] for k in flat} - set(order))
  if missed:
    raise ValueError(f"calibrate_batchnorm: BatchNorms {missed} are not reached (inside scanned "
                     "blocks: stages of more than one block); give every stage one block")
  for name in order:
    y = np.asarray(outputs(variables, faces)[name], np.float64)
    mean, var = flat[name + "/mean"], flat[name + "/var"]
    axes = tuple(range(y.ndim - 1))
    mu, sigma2 = y.mean(axes), y.var(axes)
    std = np.sqrt(np.asarray(var, np.float64) + eps)
    flat[name + "/mean"] = (mean + mu * std).astype(mean.dtype)
    flat[name + "/var"] = np.maximum(sigma2 * std ** 2 - eps, 0.0).astype(var.dtype)
    variables = dict(variables, batch_stats=traverse_util.unflatten_dict(flat, sep="/"))
  return variables
