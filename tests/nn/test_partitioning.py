"""nn.partitioning and nn.dense: logical axis names land on the arrays, dtypes parse from JSON."""
import jax
import jax.numpy as jnp

from sem_repa_jax.nn.dense import dense
from sem_repa_jax.nn.partitioning import as_dtype, partitioned


def test_partitioned_init_carries_the_names():
  boxed = partitioned(jax.nn.initializers.ones, ("embed", None))(jax.random.PRNGKey(0), (3, 2))
  assert boxed.names == ("embed", None) and boxed.value.shape == (3, 2)


def test_dense_names_kernel_and_bias_and_contracts_trailing_axes():
  layer = dense(4, ("heads", "kv", "embed"), "to_out", jnp.float32, jnp.float32, axis=(-2, -1))
  v = layer.init(jax.random.PRNGKey(0), jnp.ones((1, 5, 2, 3)))
  assert v["params"]["kernel"].names == ("heads", "kv", "embed")
  assert v["params"]["bias"].names == ("embed",)
  assert layer.apply(v, jnp.ones((1, 5, 2, 3))).shape == (1, 5, 4)


def test_as_dtype():
  assert as_dtype("bfloat16") == jnp.bfloat16
  assert as_dtype(jnp.float16) is jnp.float16
