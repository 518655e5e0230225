"""Noise levels (per-element noise std, numel-weighted RMS over tensors) that verify compares.

- *pre-migration level*: what the state's configuration asks for. Before the adaptive-noise
  change sigma was an absolute std, and every legacy config still documents it as one
  (docs/config-migration.md), so a legacy group asks for ``sigma``; a migrated group recorded that
  value in its audit log (``sigma.absolute_before``).
- *reference resume level*: what the code that wrote a legacy adaptive-noise state does on its
  first step after resuming: ``sigma * ||g||_2`` (instant path) or ``sigma`` times the EMA of
  ``||g||_2`` that was initialised at 1.0 and bias-corrected as if from zero (EMA path, read from
  the saved ``grad_norm_ema``). ``||g||_2`` is estimated from the saved second moment.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch

from upgd_migrate.checkpoint.detect import AUDIT_KEY, FORMAT_KEY


def _rms(levels: list[tuple[float, int]]) -> float | None:
    total = sum(n for _, n in levels)
    if not total:
        return None
    return math.sqrt(sum(v * v * n for v, n in levels) / total)


def _numel(entry: Mapping[str, Any] | None) -> int:
    for key in ("avg_utility", "first_moment", "exp_avg"):
        if entry and isinstance(entry.get(key), torch.Tensor):
            return entry[key].numel()
    return 0


def group_pre_level(group: Mapping[str, Any]) -> float | None:
    audit = group.get(AUDIT_KEY)
    if isinstance(audit, Mapping) and isinstance(audit.get("sigma"), Mapping):
        return float(audit["sigma"]["absolute_before"])
    if FORMAT_KEY not in group:
        return float(group["sigma"])
    if not group.get("adaptive_noise", False):
        return float(group["sigma"])  # fixed noise asks for exactly sigma
    return None  # written adaptive by the packaged optimizer: no pre-migration level


def pre_migration_level(sd: Mapping[str, Any]) -> float | None:
    levels = []
    for g in sd["param_groups"]:
        level = group_pre_level(g)
        if level is None:
            return None
        levels += [(level, _numel(sd["state"].get(p))) for p in g["params"]]
    return _rms(levels)


def _grad_norm(entry: Mapping[str, Any], group: Mapping[str, Any]) -> float | None:
    """``sqrt(sum v̂)``: the expected L2 norm of the tensor's gradient at the saved step."""
    v, step = entry.get("sec_moment"), entry.get("step")
    if v is None or not step:
        return None
    return math.sqrt(float(v.double().sum()) / (1.0 - float(group["beta2"]) ** int(step)))


def _reference_std(entry: Mapping[str, Any], group: Mapping[str, Any]) -> float | None:
    norm = _grad_norm(entry, group)
    if norm is None:
        return None
    sigma = float(group["sigma"])
    if group.get("instant_noise_scale", False):  # G1 has no such key: the EMA path
        return sigma * norm
    if "grad_norm_ema" not in entry:
        return None  # the reference raised KeyError('grad_norm_ema') here
    nb, t = float(group.get("noise_beta", 0.999)), int(entry["step"]) + 1
    ema = nb * float(entry["grad_norm_ema"]) + (1.0 - nb) * norm
    return sigma * ema / (1.0 - nb**t)


def reference_resume_level(sd: Mapping[str, Any]) -> tuple[float | None, str]:
    """The reference code's first-step noise level for a legacy adaptive state, and how."""
    groups = [g for g in sd["param_groups"] if FORMAT_KEY not in g and g.get("adaptive_noise")]
    if not groups:
        return None, ""
    levels, crash = [], False
    for g in groups:
        for pid in g["params"]:
            entry = sd["state"].get(pid)
            std = _reference_std(entry, g) if entry is not None else None
            if std is None:
                crash = crash or (entry is not None and "grad_norm_ema" not in entry)
                continue
            levels.append((std, _numel(entry)))
    path = "instant" if groups[0].get("instant_noise_scale") else "EMA"
    how = f"reference {path} path" + (", KeyError 'grad_norm_ema' on some tensors" if crash else "")
    return _rms(levels), how
