"""Optimizer migration steps (registered in order: fill, adaptive noise, noise EMA, stamp).

A group is *legacy* until it carries the format stamp. Legacy groups, and stamped groups the
packaged optimizers wrote with fixed noise (``adaptive_noise=False``, ``sigma > 0``), are converted
to adaptive noise; a migrated or adaptive state is left alone.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from upgd_migrate.checkpoint.detect import AUDIT_KEY, FORMAT_KEY, optimizer_class
from upgd_migrate.checkpoint.steps.registry import Context, Note, Outcome, register
from upgd_migrate.optim.calibrate import CalibrationError, calibrate_group, direction_energy
from upgd_migrate.optim.upgd import FORMAT_VERSION, LATE_OPTIONS

# The seed's documented default ratio, for states that saved no gradient statistics (UPGD).
DEFAULT_SIGMA_RATIO = 0.05
_LATE = {"AdaptiveUPGD": LATE_OPTIONS, "UPGD": LATE_OPTIONS, "UPGDW": {"foreach": None}}


def _legacy(group: dict) -> bool:
    return FORMAT_KEY not in group


def _fixed_noise(group: dict) -> bool:
    # A stamped group the packaged optimizers wrote with adaptive_noise=False still has an
    # absolute sigma: converting it is the same change as for a legacy group (and once
    # converted it is adaptive, so a second run leaves it alone).
    return not group.get("adaptive_noise") and float(group["sigma"]) > 0.0


def _replace_groups(sd: dict, groups: list[dict]) -> dict:
    return {**sd, "param_groups": groups}


@register("optim.fill-group-keys", "optimizer",
          "add group options introduced after the state was written, with their defaults")
def fill_group_keys(sd: dict, ctx: Context) -> Outcome | None:
    late = _LATE[optimizer_class(sd)]
    if all(k in g for g in sd["param_groups"] for k in late):
        return None
    groups, notes = [], []
    for i, g in enumerate(sd["param_groups"]):
        missing = {k: v for k, v in late.items() if k not in g}
        groups.append({**g, **missing})
        if missing:
            notes.append(Note("info", f"group {i}: added {', '.join(sorted(missing))}"))
    return Outcome(_replace_groups(sd, groups), notes)


def _sigma_for(sd: dict, index: int, cls: str, ctx: Context) -> tuple[float, dict]:
    """The value policy shared with the config command: flag, else calibrate, else default."""
    sigma_abs = float(sd["param_groups"][index]["sigma"])
    record: dict[str, Any] = {"absolute_before": sigma_abs}
    if ctx.sigma_ratio is not None:
        return ctx.sigma_ratio, {**record, "source": "--sigma-ratio"}
    try:
        cal = calibrate_group(sd, index)
    except CalibrationError:
        return DEFAULT_SIGMA_RATIO, {**record, "source": "default"}
    return cal.sigma_relative, {**record, "source": "calibrated",
                                "direction_rms": cal.direction_rms}


@register("optim.adaptive-noise", "optimizer",
          "turn adaptive noise on; sigma becomes the relative ratio that keeps the noise level")
def enable_adaptive_noise(sd: dict, ctx: Context) -> Outcome | None:
    cls = optimizer_class(sd)
    if cls == "UPGDW":
        return None  # no adaptive noise in UPGDW: its sigma stays an absolute std
    todo = [i for i, g in enumerate(sd["param_groups"]) if _legacy(g) or _fixed_noise(g)]
    if not todo:
        return None
    groups, notes = list(sd["param_groups"]), []
    for i in todo:
        g = groups[i]
        if float(g["sigma"]) == 0.0:
            notes.append(Note("info", f"group {i}: sigma is 0 (no noise): left without noise"))
            continue
        value, record = _sigma_for(sd, i, cls, ctx)
        audit = {**g.get(AUDIT_KEY, {}), "sigma": {**record, "relative": value}}
        groups[i] = {**g, "sigma": value, "adaptive_noise": True, AUDIT_KEY: audit}
        notes.append(Note("info", f"group {i}: sigma {record['absolute_before']:g} (absolute "
                                  f"std) -> {value:.6g} (relative ratio, {record['source']})"))
    return Outcome(_replace_groups(sd, groups), notes)


@register("optim.instant-noise", "optimizer",
          "with --instant-noise: move EMA-path groups to the instant noise scale")
def instant_noise(sd: dict, ctx: Context) -> Outcome | None:
    # Only on request: instant_noise_scale=False is an explicit choice. The EMA of rms(x) lags a
    # change of gradient scale, so only the instant path holds the ratio under VGS.
    if not ctx.instant_noise or optimizer_class(sd) == "UPGDW":
        return None
    todo = [i for i, g in enumerate(sd["param_groups"])
            if g.get("adaptive_noise") and not g.get("instant_noise_scale", True)]
    if not todo:
        return None
    groups = [{**g, "instant_noise_scale": True} if i in todo else g
              for i, g in enumerate(sd["param_groups"])]
    return Outcome(_replace_groups(sd, groups),
                   [Note("info", f"group {i}: instant_noise_scale False -> True") for i in todo])


def _seed_entry(entry: dict, group: dict) -> dict | None:
    """EMA state whose bias-corrected value is the saved direction's rms (one update old)."""
    found = direction_energy(entry, float(group["beta1"]), float(group["beta2"]),
                             float(group["eps"]))
    if found is None or "noise_scale_ema" in entry:
        return None
    rms = math.sqrt(found[0] / found[1])
    nb = float(group["noise_beta"])
    ema = torch.tensor((1.0 - nb) * rms, dtype=entry["avg_utility"].dtype)
    return {**entry, "noise_scale_ema": ema, "noise_scale_steps": 1}


@register("optim.seed-noise-ema", "optimizer",
          "on the EMA noise path, start the noise-scale EMA at the saved direction's rms")
def seed_noise_ema(sd: dict, ctx: Context) -> Outcome | None:
    if optimizer_class(sd) != "AdaptiveUPGD":
        return None  # UPGD saves no gradient statistics: its EMA starts at the first step
    state, seeded = dict(sd["state"]), 0
    for g in sd["param_groups"]:
        if not g.get("adaptive_noise") or g.get("instant_noise_scale", True):
            continue
        for pid in g["params"]:
            entry = state.get(pid)
            new = _seed_entry(entry, g) if entry is not None else None
            if new is not None:
                state[pid], seeded = new, seeded + 1
    if not seeded:
        return None
    return Outcome({**sd, "state": state},
                   [Note("info", f"seeded noise_scale_ema of {seeded} tensors")])


@register("optim.stamp-format", "optimizer", "stamp the format version in every param group")
def stamp_format(sd: dict, ctx: Context) -> Outcome | None:
    if not any(_legacy(g) for g in sd["param_groups"]):
        return None
    groups = [g if not _legacy(g) else {**g, FORMAT_KEY: FORMAT_VERSION}
              for g in sd["param_groups"]]
    return Outcome(_replace_groups(sd, groups))
