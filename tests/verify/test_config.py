"""verify --config: which config values count as disagreeing with the checkpoint."""
from __future__ import annotations

from upgd_migrate.verify.config import mismatches

STATE = {"param_groups": [{"sigma": 0.0046073443, "adaptive_noise": True,
                           "instant_noise_scale": True}]}


def test_a_rounded_calibrated_sigma_agrees():
    # what `config --calibrate-from` writes: 3 significant digits of the same calibration
    assert mismatches({"sigma": 0.00461, "adaptive_noise": True}, STATE) == []


def test_a_different_sigma_or_flag_disagrees():
    assert mismatches({"sigma": 0.05}, STATE) == [
        "group 0 sigma: config 0.05, checkpoint 0.0046073443"]
    assert mismatches({"adaptive_noise": False}, STATE) == [
        "group 0 adaptive_noise: config False, checkpoint True"]
    assert mismatches({"sigma": "0.0046"}, STATE) == [  # a string is not the number
        "group 0 sigma: config '0.0046', checkpoint 0.0046073443"]
