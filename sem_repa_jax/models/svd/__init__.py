"""Stable Video Diffusion: the spatio-temporal U-Net and the temporal VAE."""
