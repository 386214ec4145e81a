"""Orbax saves replicated arrays 'replica-parallel' (each replica writes a slice). On simulated CPU
devices each distinct slice costs a compile (~0.07 s, seconds per toy state), so these tests save
whole replicas instead; production keeps Orbax's default."""
import jax
import orbax.checkpoint as ocp

ocp.type_handlers.register_type_handler(
    jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=False), override=True)
