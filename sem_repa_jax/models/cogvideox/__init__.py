"""CogVideoX: the 3D diffusion transformer and the 3D causal VAE."""
