"""transformers' activation names (ACT2FN keys) as JAX functions, so configs port by name.

The names matter: transformers' "gelu" is the exact erf GELU while jax.nn.gelu defaults to the tanh
approximation, and T5 v1.1's "gated-gelu" resolves to "gelu_new", the tanh approximation.
"""
import jax
import jax.numpy as jnp


def _quick_gelu(x):
  return x * jax.nn.sigmoid(1.702 * x)


def _gelu_tanh(x):
  # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), transformers' NewGELUActivation.
  return jax.nn.gelu(x, approximate=True)


ACTIVATIONS = {
    "relu": jax.nn.relu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": _gelu_tanh,
    "gelu_pytorch_tanh": _gelu_tanh,
    "gelu_fast": _gelu_tanh,
    "quick_gelu": _quick_gelu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "tanh": jnp.tanh,
}


def get_activation(name: str):
  if name not in ACTIVATIONS:
    raise ValueError(f"activation {name!r} is not supported; expected one of {sorted(ACTIVATIONS)}")
  return ACTIVATIONS[name]
