"""VividPose (Wang et al. 2024) on SVD: reference attention from an SD 2.1 ReferenceNet, the
identity-aware controller (ArcFace -> MLP -> tokens of a zero-initialized decoupled
cross-attention) and the geometry-aware pose controller (SMPL-X render maps + skeleton maps ->
two light encoders ending in zero convolutions, summed, added to the noisy latent). No public
code: the paper is the reference (docs/vividpose.md)."""
