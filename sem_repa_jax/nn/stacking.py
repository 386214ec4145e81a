"""Repeated identical blocks as one scanned, optionally rematerialized layer.

nn.scan stacks the parameters of `num_layers` blocks on a leading 'layers' axis, so a deep encoder
compiles one block; nn.remat chooses which activations the backward pass recomputes.
"""
import flax.linen as nn
import jax

REMAT_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


def scanned(block_cls, num_layers: int, remat_policy: str = "none", broadcast_args: int = 0):
  """The class of a module applying `block_cls` num_layers times: (carry, *broadcast) -> (carry, None).

  block_cls.__call__(carry, *args) must return (carry, None); args are shared by every layer.
  """
  if remat_policy != "none":
    if remat_policy not in REMAT_POLICIES:
      raise ValueError(f"remat_policy {remat_policy!r}: expected 'none' or one of "
                       f"{sorted(REMAT_POLICIES)}")
    block_cls = nn.remat(block_cls, policy=REMAT_POLICIES[remat_policy], prevent_cse=False)
  return nn.scan(block_cls, variable_axes={"params": 0}, split_rngs={"params": True},
                 in_axes=(nn.broadcast,) * broadcast_args, length=num_layers,
                 metadata_params={nn.PARTITION_NAME: "layers"})
