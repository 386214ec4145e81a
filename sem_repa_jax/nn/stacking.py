"""Repeated identical blocks as one scanned layer, and rematerialization chosen by name.

nn.scan stacks the parameters of `num_layers` blocks on a leading 'layers' axis, so a deep encoder
compiles one block; nn.remat chooses which activations the backward pass recomputes. `remat` also
serves blocks that are not scanned (a stage's first block, a U-Net's resnets).
"""
import flax.linen as nn
import jax

REMAT_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


def remat(block_cls, policy: str = "none", prevent_cse: bool = True, owner: str = "remat_policy"):
  """block_cls wrapped in nn.remat with the named policy ('none': block_cls itself).

  prevent_cse=False only under a scan, which already keeps XLA from merging the recomputation
  away; `owner` names the setting in the error message.
  """
  if policy == "none":
    return block_cls
  if policy not in REMAT_POLICIES:
    raise ValueError(f"{owner} {policy!r}: expected 'none' or one of {sorted(REMAT_POLICIES)}")
  return nn.remat(block_cls, policy=REMAT_POLICIES[policy], prevent_cse=prevent_cse)


def scanned(block_cls, num_layers: int, remat_policy: str = "none", broadcast_args: int = 0):
  """The class of a module applying `block_cls` num_layers times: (carry, *broadcast) -> (carry, None).

  block_cls.__call__(carry, *args) must return (carry, None); args are shared by every layer.
  """
  block_cls = remat(block_cls, remat_policy, prevent_cse=False)
  return nn.scan(block_cls, variable_axes={"params": 0}, split_rngs={"params": True},
                 in_axes=(nn.broadcast,) * broadcast_args, length=num_layers,
                 metadata_params={nn.PARTITION_NAME: "layers"})
