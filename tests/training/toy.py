"""A toy model, data pipeline and job used by the training tests (and the multi-host worker)."""
import flax.linen as nn
import grain
import jax
import jax.numpy as jnp
import numpy as np

from configs import base
from sem_repa_jax.training import loop, mesh as mesh_lib, optimizers, sharding
from sem_repa_jax.training.train_state import make_train_state

FEATURES, HIDDEN = 16, 32


class ToyMLP(nn.Module):
  """x -> LayerNorm -> Dense(embed->mlp) -> gelu -> Dense(mlp->embed) -> Dense head."""
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    part = nn.with_logical_partitioning
    x = nn.with_logical_constraint(x, ("batch", "embed"))
    h = nn.LayerNorm(epsilon=1e-5, dtype=self.dtype,
                     scale_init=part(nn.initializers.ones, ("embed",)),
                     bias_init=part(nn.initializers.zeros, ("embed",)))(x)
    h = nn.Dense(HIDDEN, dtype=self.dtype, kernel_init=part(nn.initializers.lecun_normal(),
                                                            ("embed", "mlp")),
                 bias_init=part(nn.initializers.zeros, ("mlp",)))(h)
    h = nn.with_logical_constraint(nn.gelu(h), ("batch", "mlp"))
    h = nn.Dense(FEATURES, dtype=self.dtype, kernel_init=part(nn.initializers.lecun_normal(),
                                                              ("mlp", "embed")),
                 bias_init=part(nn.initializers.zeros, ("embed",)))(h)
    return nn.Dense(FEATURES, name="head", dtype=self.dtype,
                    kernel_init=part(nn.initializers.lecun_normal(), ("embed", "embed2")))(x + h)


def example(i):
  r = np.random.default_rng(int(i))
  x = r.normal(size=(FEATURES,)).astype(np.float32)
  y = np.tanh(x[::-1] * 0.5).astype(np.float32)
  return {"x": x, "y": y}


def dataset(batch_size, num_records=1024, seed=0, shard_index=0, shard_count=1):
  ds = grain.MapDataset.range(num_records).shuffle(seed=seed)
  ds = ds[shard_index::shard_count]
  return iter(ds.map(example).batch(batch_size, drop_remainder=True).repeat(None).to_iter_dataset())


def config(mesh_shape=(-1, 1, 1), workdir="/tmp/toy", **optimizer):
  c = base.get_config()
  c.workdir = str(workdir)
  c.mesh.shape = tuple(mesh_shape)
  c.logical_axis_rules = tuple(c.logical_axis_rules) + (("embed2", None),)
  c.optimizer = optimizers.default_config()
  c.optimizer.learning_rate = 1e-2
  c.optimizer.weight_decay = 1e-3
  for k, v in optimizer.items():
    c.optimizer[k] = v
  c.checkpoint.async_save = True
  c.progress_bar = False
  c.log_every_steps = 2
  c.checkpoint.every_steps = 2
  return c


def loss_fn(module):
  def fn(variables, batch, rng):
    del rng
    pred = module.apply(variables, batch["x"])
    terms = {"mse": jnp.mean((pred - batch["y"]) ** 2), "l1": jnp.mean(jnp.abs(pred - batch["y"]))}
    return terms["mse"] + 0.1 * terms["l1"], terms
  return fn


def setup(cfg, devices=None, frozen_prefixes=(), ema_decay=0.0, module=None):
  """(mesh, rules, abstract_state, init, step_fn) for the toy job."""
  module = module or ToyMLP()
  mesh = mesh_lib.make_mesh(cfg, devices)
  rules = sharding.axis_rules(cfg)
  tx, schedule = optimizers.make_optimizer(cfg.optimizer)
  abstract, init = make_train_state(module.init, jax.random.PRNGKey(cfg.seed),
                                    jnp.zeros((1, FEATURES)), tx=tx, mesh=mesh, rules=rules,
                                    rng=cfg.seed, frozen_prefixes=frozen_prefixes,
                                    ema_decay=ema_decay)
  step_fn = loop.compile_train_step(loop.make_train_step(loss_fn(module), schedule), abstract,
                                    mesh, rules)
  return mesh, rules, abstract, init, step_fn


