"""sem_repa_jax: human image animation research in JAX (SemanticREPA, StableAnimator, VividPose)."""

__version__ = "0.1.0"
