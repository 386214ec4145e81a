"""Train state, optimizers, mesh and sharding, checkpointing, metrics, the generic loop."""
