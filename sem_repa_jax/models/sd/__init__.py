"""Stable Diffusion: the 2D conditional U-Net (VividPose's ReferenceNet is an SD 2.1 U-Net)."""
