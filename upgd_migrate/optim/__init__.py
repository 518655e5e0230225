"""The UPGD optimizer family, the Variance Gradient Scaler, noise metrics, the training-time
noise monitor and calibration.

Imports torch and nothing else of the package (a drop-in for the reference code's classes).
"""
from __future__ import annotations

from upgd_migrate.optim.metrics import NoiseRecorder, amplification, noise_to_update_ratio, seed_metric
from upgd_migrate.optim.monitor import NoiseMonitor
from upgd_migrate.optim.upgd import FORMAT_KEY, FORMAT_VERSION, UPGD, UPGDW, AdaptiveUPGD
from upgd_migrate.optim.vgs import LegacyVGSStateWarning, VarianceGradientScaler

__all__ = [
    "UPGD", "UPGDW", "AdaptiveUPGD", "FORMAT_KEY", "FORMAT_VERSION",
    "VarianceGradientScaler", "LegacyVGSStateWarning",
    "NoiseRecorder", "NoiseMonitor", "amplification", "noise_to_update_ratio", "seed_metric",
]
