"""Relative sigma that keeps a checkpoint's absolute noise level (docs/optimizers.md).

With fixed noise the per-element std is ``sigma_abs``. With adaptive noise it is
``sigma_rel * rms(d)``, ``d = m̂ / (sqrt(v̂) + eps)`` the Adam direction the noise is added to.
From the moments saved at the last step, ``sigma_rel = sigma_abs / rms(d)`` (rms over every
element of the group) gives the same total noise energy on the first step after migration.

Only the Adam types can be calibrated: an SGD-type UPGD state saves no gradient statistics,
and UPGDW has no adaptive noise. Pure functions over state dicts; nothing here loads files.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch

# (first moment, second moment, group key of beta1, of beta2) per state layout
MOMENT_LAYOUTS = (("first_moment", "sec_moment"), ("exp_avg", "exp_avg_sq"))


class CalibrationError(ValueError):
    """The state holds no moments to calibrate from (a UPGD state, or no step taken yet)."""


@dataclass(frozen=True)
class Calibration:
    sigma_relative: float
    sigma_absolute: float
    direction_rms: float
    tensors: int
    elements: int


def _betas(group: Mapping[str, Any]) -> tuple[float, float, float]:
    if "betas" in group:
        b1, b2 = group["betas"]
    else:
        b1, b2 = group.get("beta1", 0.9), group.get("beta2", 0.999)
    return float(b1), float(b2), float(group.get("eps", 1e-8))


def direction(entry: Mapping[str, Any], b1: float, b2: float, eps: float) -> torch.Tensor | None:
    """The bias-corrected Adam direction a state entry implies at its saved step, or None."""
    step = entry.get("step")
    step = int(step.item()) if isinstance(step, torch.Tensor) else step
    if not step:
        return None
    for m_key, v_key in MOMENT_LAYOUTS:
        if m_key in entry and v_key in entry:
            # In place on fresh float64 copies (copy=True: a float64 state must not be touched):
            # the out-of-place arithmetic with two allocations instead of six, which dominated
            # migrating a 1 GB checkpoint.
            m = entry[m_key].to(torch.float64, copy=True).div_(1.0 - b1**step)
            v = entry[v_key].to(torch.float64, copy=True).div_(1.0 - b2**step).sqrt_().add_(eps)
            return m.div_(v)
    return None


_CHUNK = 1 << 18  # elements: 1 MiB per float32 temporary, so the arithmetic stays in cache


def direction_energy(entry: Mapping[str, Any], b1: float, b2: float,
                     eps: float) -> tuple[float, int] | None:
    """``(sum(d**2), numel)`` of :func:`direction`, without materialising ``d``.

    Chunked, in the moments' precision (float32 at least) with a float64 sum: migrating a
    1 GB checkpoint spends its time here, and whole-tensor float64 copies cost several times
    more than this while changing the rms by less than 1e-6.
    """
    step = entry.get("step")
    step = int(step.item()) if isinstance(step, torch.Tensor) else step
    layout = next(((m, v) for m, v in MOMENT_LAYOUTS if m in entry and v in entry), None)
    if not step or layout is None:
        return None
    m, v = (entry[k].detach().reshape(-1) for k in layout)
    dtype = torch.promote_types(torch.promote_types(m.dtype, v.dtype), torch.float32)
    inv_bc1, inv_bc2 = 1.0 / (1.0 - b1**step), 1.0 / (1.0 - b2**step)
    buf = torch.empty(min(_CHUNK, m.numel()), dtype=dtype)
    energy = 0.0
    for start in range(0, m.numel(), _CHUNK):
        mc, vc = m[start:start + _CHUNK], v[start:start + _CHUNK]
        chunk = buf[:mc.numel()]
        chunk.copy_(vc).mul_(inv_bc2).sqrt_().add_(eps)  # in `dtype`, even for 16-bit moments
        torch.div(mc, chunk, out=chunk)
        energy += float(chunk.square_().sum(dtype=torch.float64))
    return energy * inv_bc1 * inv_bc1, m.numel()


def calibrate_group(state_dict: Mapping[str, Any], group_index: int = 0,
                    sigma_absolute: float | None = None) -> Calibration:
    """The relative sigma for one param group of an optimizer state dict."""
    group = state_dict["param_groups"][group_index]
    sigma_abs = float(group["sigma"] if sigma_absolute is None else sigma_absolute)
    b1, b2, eps = _betas(group)
    energy, elements, tensors = 0.0, 0, 0
    for pid in group["params"]:
        entry = state_dict["state"].get(pid)
        found = direction_energy(entry, b1, b2, eps) if entry is not None else None
        if found is None:
            continue
        energy += found[0]
        elements += found[1]
        tensors += 1
    if not elements:
        raise CalibrationError(f"param group {group_index} has no saved Adam moments to "
                               "calibrate from")
    rms = math.sqrt(energy / elements)
    if rms == 0.0:
        raise CalibrationError(f"param group {group_index}: the saved Adam direction is zero")
    return Calibration(sigma_abs / rms, sigma_abs, rms, tensors, elements)
