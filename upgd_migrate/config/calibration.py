"""``--calibrate-from CHECKPOINT``: the relative sigma that keeps a checkpoint's noise level.

The only config-path module that imports torch, and only when called: the checkpoint is read
by the checkpoint package's loader, so every container it knows works here too.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

from upgd_migrate.errors import UpgdMigrateError
from upgd_migrate.config.migrations import SigmaPolicy

SIGNIFICANT_DIGITS = 3  # 0.5% rounding: well inside the 2% the calibration promises


def load_optimizer_state(path: str) -> dict:
    """The first optimizer state in ``path``, in any container ``upgd-migrate checkpoint`` reads
    (raw state, training-loop dict, Lightning, population-based training, stable-baselines3)."""
    try:
        with warnings.catch_warnings():  # torch's NumPy notice says nothing about the file
            warnings.filterwarnings("ignore", "Failed to initialize NumPy")
            from upgd_migrate.checkpoint.formats import open_checkpoint
    except ImportError:
        raise UpgdMigrateError("--calibrate-from needs torch: pip install "
                               "'upgd-migrate[torch]'") from None
    from upgd_migrate.checkpoint.io import UnsafeCheckpointError

    try:
        ckpt = open_checkpoint(Path(path))  # weights_only; errors name the file
    except UnsafeCheckpointError as e:  # its hint names a checkpoint-command option: reword
        raise UpgdMigrateError(f"refusing to load checkpoint {os.path.basename(path)}: it needs "
                               f"arbitrary unpickling (globals {', '.join(e.names)}); only "
                               "weights_only checkpoints are read") from e
    for slot in ckpt.slots:
        if slot.kind == "optimizer":
            return slot.state
    raise UpgdMigrateError(f"no optimizer state found in {os.path.basename(path)} "
                           f"(a {ckpt.container})")


def calibrated_policy(path: str) -> SigmaPolicy:
    """A policy with the ratio calibrated from param group 0 of the checkpoint's optimizer."""
    state, name = load_optimizer_state(path), os.path.basename(path)
    from upgd_migrate.optim.calibrate import CalibrationError, calibrate_group  # torch is in

    group = state["param_groups"][0]
    # A legacy (unstamped) group's sigma is the absolute std its config documents, even with
    # adaptive_noise on (the case the linter's UPG101 exists for); the checkpoint migration
    # reads it the same way. Only a state written by the packaged optimizer holds a ratio.
    if group.get("adaptive_noise") and "upgd_migrate_format" in group:
        raise UpgdMigrateError(f"{name}: param group 0 already runs adaptive noise with a "
                               "relative sigma, so it is no absolute std to calibrate from")
    if "sigma" not in group:
        raise UpgdMigrateError(f"{name}: param group 0 has no sigma: not a UPGD-family state")
    try:
        cal = calibrate_group(state)
    except CalibrationError as e:
        raise UpgdMigrateError(f"cannot calibrate from {name}: {e}") from e
    ratio = float(f"{cal.sigma_relative:.{SIGNIFICANT_DIGITS}g}")
    source = (f"calibrated from {name}: absolute sigma {cal.sigma_absolute:g} / Adam direction "
              f"rms {cal.direction_rms:.3g}")
    return SigmaPolicy(ratio, source, only_for=("AdaptiveUPGD",))
