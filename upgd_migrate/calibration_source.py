"""``--calibrate-from CHECKPOINT``: the relative sigma that keeps a checkpoint's noise level.

The only config-path module that imports torch, and only when called. Finding the optimizer
state inside a container is kept to :func:`load_optimizer_state` alone: the checkpoint package
will provide the shared, complete loader, and this function is the one place to swap for it.
"""
from __future__ import annotations

import os
import pickle
import re
import warnings
from typing import Any

from upgd_migrate.errors import UpgdMigrateError
from upgd_migrate.migrations import SigmaPolicy

# Training-loop dicts name the optimizer state one of these (DOMAIN.md section 7).
STATE_KEYS = ("optimizer", "optimizer_state_dict", "optimizer_state")
SIGNIFICANT_DIGITS = 3  # 0.5% rounding: well inside the 2% the calibration promises


def _is_state(obj: Any) -> bool:
    return isinstance(obj, dict) and isinstance(obj.get("state"), dict) \
        and isinstance(obj.get("param_groups"), list) and bool(obj["param_groups"])


def _torch_load(path: str) -> Any:
    try:
        with warnings.catch_warnings():  # torch's NumPy notice says nothing about the file
            warnings.filterwarnings("ignore", "Failed to initialize NumPy")
            import torch
    except ImportError:
        raise UpgdMigrateError("--calibrate-from needs torch: pip install "
                               "'upgd-migrate[torch]'") from None
    name = os.path.basename(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except OSError as e:
        raise UpgdMigrateError(f"cannot read checkpoint {name}: {e.strerror or e}") from e
    except pickle.UnpicklingError as e:
        unsafe = _unsafe_globals(path)
        if unsafe:
            raise UpgdMigrateError(f"refusing to load checkpoint {name}: it needs arbitrary "
                                   f"unpickling (globals {', '.join(unsafe)}); only "
                                   "weights_only checkpoints are read") from e
        raise UpgdMigrateError(f"{name} is not a readable torch checkpoint: "
                               f"{_reason(e)}") from e
    except Exception as e:  # torch raises RuntimeError & co. for files that are not checkpoints
        raise UpgdMigrateError(f"{name} is not a readable torch checkpoint: "
                               f"{_reason(e)}") from e


def _reason(error: Exception) -> str:
    """The line of torch's message that says what is wrong, not its advice."""
    text = str(error)
    detail = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
    lines = [line for line in text.splitlines() if line.strip()]
    return detail.group(1) if detail else lines[0] if lines else type(error).__name__


def _unsafe_globals(path: str) -> list[str]:
    """The globals a checkpoint would need unpickled; empty when it is no checkpoint at all."""
    import torch.serialization

    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # not a zip checkpoint: nothing to name, so not an "unsafe" one
        return []


def load_optimizer_state(path: str) -> dict:
    """The optimizer state dict in ``path``: raw, in a training dict, or a Lightning checkpoint."""
    obj = _torch_load(path)
    if _is_state(obj):
        return obj
    if isinstance(obj, dict):
        for key in STATE_KEYS:
            if _is_state(obj.get(key)):
                return obj[key]
        states = obj.get("optimizer_states")
        if isinstance(states, list) and states and _is_state(states[0]):
            return states[0]
    raise UpgdMigrateError(f"no optimizer state found in {os.path.basename(path)}: expected an "
                           f"optimizer state_dict, a dict with one under "
                           f"{', '.join(map(repr, STATE_KEYS))}, or a Lightning "
                           "'optimizer_states' list")


def calibrated_policy(path: str) -> SigmaPolicy:
    """A policy with the ratio calibrated from param group 0 of the checkpoint's optimizer."""
    state, name = load_optimizer_state(path), os.path.basename(path)
    from upgd_migrate.optim.calibrate import CalibrationError, calibrate_group  # torch is in

    group = state["param_groups"][0]
    if group.get("adaptive_noise"):
        raise UpgdMigrateError(f"{name}: param group 0 already runs adaptive noise, so its sigma "
                               "is no absolute std to calibrate from")
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
