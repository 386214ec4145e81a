"""Shared building blocks: attention dispatch, embeddings, norms, convolutions, logical axes."""
