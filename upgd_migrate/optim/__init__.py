"""Optimizers and VGS (torch)."""
