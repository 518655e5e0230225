"""Recognise what a state dict is: which optimizer class, which generation, which VGS version.

Generations are recognisable only by the keys present (docs/checkpoints.md). A state
stamped with ``upgd_migrate_format`` was written by the packaged optimizers or migrated.
"""
from __future__ import annotations

from typing import Any, Mapping

from upgd_migrate.optim.upgd import FORMAT_KEY
from upgd_migrate.optim.vgs import version_label

AUDIT_KEY = "upgd_migrate_audit"
VGS_KEYS = frozenset({"enabled", "beta", "alpha", "eps", "warmup_steps", "step_count"})


def is_optimizer_state(obj: Any) -> bool:
    return (isinstance(obj, Mapping) and isinstance(obj.get("state"), Mapping)
            and isinstance(obj.get("param_groups"), list))


def is_vgs_state(obj: Any) -> bool:
    return isinstance(obj, Mapping) and VGS_KEYS <= set(obj)


def optimizer_class(sd: Mapping[str, Any]) -> str | None:
    """The UPGD-family class of an optimizer state dict, or None for any other optimizer."""
    groups = sd["param_groups"]
    if not groups or not all("sigma" in g and "lr" in g for g in groups):
        return None  # torch's own optimizers take no sigma
    entries = [e for e in sd["state"].values() if isinstance(e, Mapping)]
    keys = set().union(*(set(e) for e in entries)) if entries else set()
    if "betas" in groups[0] or "exp_avg" in keys:
        return "UPGDW"
    if "beta1" in groups[0] or "first_moment" in keys:
        return "AdaptiveUPGD"
    if "beta_utility" in groups[0]:
        return "UPGD"
    return None


def generation(sd: Mapping[str, Any], cls: str) -> str:
    """``current`` for stamped states; G0/G1/G2 for AdaptiveUPGD; ``legacy`` otherwise."""
    groups = sd["param_groups"]
    if all(FORMAT_KEY in g for g in groups):
        return "current"
    if cls != "AdaptiveUPGD":
        return "legacy"
    group = groups[0]
    if "instant_noise_scale" in group:
        return "G2"
    return "G1" if "adaptive_noise" in group else "G0"


def vgs_version(sd: Mapping[str, Any]) -> str:
    """"1" for v1 (no label, or the reference's default label "1.0"), else the label."""
    return version_label(sd)

