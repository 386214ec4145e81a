"""Noise schedules, samplers, losses and guidance as pure functions."""
