"""Frozen encoders: T5 v1.1 (text), CLIP ViT (image), ArcFace IResNet (identity)."""
