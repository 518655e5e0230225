"""The UPGD optimizer family and the Variance Gradient Scaler (torch required).

Importing :mod:`upgd_migrate` does not import this package; everything here needs torch.
"""
from __future__ import annotations

from upgd_migrate.optim.metrics import NoiseRecorder, amplification, noise_to_update_ratio, seed_metric
from upgd_migrate.optim.upgd import FORMAT_KEY, FORMAT_VERSION, UPGD, UPGDW, AdaptiveUPGD
from upgd_migrate.optim.vgs import LegacyVGSStateWarning, VarianceGradientScaler

__all__ = [
    "UPGD", "UPGDW", "AdaptiveUPGD", "FORMAT_KEY", "FORMAT_VERSION",
    "VarianceGradientScaler", "LegacyVGSStateWarning",
    "NoiseRecorder", "amplification", "noise_to_update_ratio", "seed_metric",
]
