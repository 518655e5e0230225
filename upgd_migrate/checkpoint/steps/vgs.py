"""VGS migration steps: every version to the 3.2 layout, never dropping data.

Mirrors :class:`upgd_migrate.optim.vgs.VarianceGradientScaler`'s loader as pure functions, so
the audit log can say what happened and the result loads into the scaler without a warning.
"""
from __future__ import annotations

import torch

from upgd_migrate.checkpoint.steps.registry import Context, Note, Outcome, register
from upgd_migrate.optim import vgs as V

_V32_DEFAULTS = {"min_scaling_factor": 0.1, "variance_cap": 50.0}
# The v3.2 state_dict's key order; other keys follow in their saved order.
_ORDER = ("enabled", "beta", "alpha", "eps", "warmup_steps", "step_count",
          V.STATISTICS_COUNT_KEY, *V.GLOBAL_KEYS, *V.TENSOR_KEYS, "vgs_version",
          "min_scaling_factor", "variance_cap", "upgd_migrate_format", V.LEGACY_KEY)


def _version(sd: dict) -> str:
    return V.version_label(sd)  # "1" also for the reference's default label "1.0"


def _ordered(sd: dict) -> dict:
    head = {k: sd[k] for k in _ORDER if k in sd}
    return {**head, **{k: v for k, v in sd.items() if k not in head}}


def _zeros(n: int) -> torch.Tensor:
    return torch.zeros(n, dtype=torch.float32)


@register("vgs.keep-legacy-statistics", "vgs",
          "move incompatible 2.0/3.0 statistics under legacy_statistics; restart live ones")
def keep_legacy_statistics(sd: dict, ctx: Context) -> Outcome | None:
    version = _version(sd)
    # None statistics (a fresh or just-reloaded reference VGS) mean "none yet" in every version:
    # nothing to keep.
    if version not in V.LEGACY_MEANINGS or not all(isinstance(sd.get(k), torch.Tensor)
                                                   for k in V.TENSOR_KEYS):
        return None
    meaning = V.LEGACY_MEANINGS[version]
    legacy = {"vgs_version": version, "meaning": meaning, **{k: sd[k] for k in V.TENSOR_KEYS}}
    n = sd["param_numel"].numel()
    new = {**sd, "param_grad_mean_ema": _zeros(n), "param_grad_sq_ema": _zeros(n),
           "param_numel": sd["param_numel"], V.STATISTICS_COUNT_KEY: 0, V.LEGACY_KEY: legacy}
    return Outcome(new, [Note("warning", f"VGS {version} statistics ({meaning}) are "
                                         f"incompatible: kept under {V.LEGACY_KEY!r}, live "
                                         "statistics restart at zero")])


@register("vgs.add-statistics", "vgs",
          "give a v1 state zero per-parameter statistics sized from the optimizer's tensors")
def add_statistics(sd: dict, ctx: Context) -> Outcome | None:
    if _version(sd) != "1" or any(k in sd for k in V.TENSOR_KEYS) or not ctx.param_numels:
        return None
    n = len(ctx.param_numels)
    numel = torch.tensor([float(x) for x in ctx.param_numels], dtype=torch.float32)
    new = {**sd, "param_grad_mean_ema": _zeros(n), "param_grad_sq_ema": _zeros(n),
           "param_numel": numel, V.STATISTICS_COUNT_KEY: 0}
    return Outcome(new, [Note("warning", "VGS v1 had no per-parameter statistics: they start "
                                         f"at zero for {n} tensors; global statistics kept")])


@register("vgs.upgrade-3.2", "vgs", "write the 3.2 layout: version, new options, format stamp")
def upgrade_32(sd: dict, ctx: Context) -> Outcome | None:
    if not all(k in sd for k in V.TENSOR_KEYS):
        return None  # a v1 state we could not size: loads (with a warning) as it is
    missing = {**{k: v for k, v in _V32_DEFAULTS.items() if k not in sd}}
    if V.STATISTICS_COUNT_KEY not in sd:  # older states counted their statistics by steps
        missing[V.STATISTICS_COUNT_KEY] = int(sd["step_count"]) if V.has_statistics(sd) else 0
    if sd.get("upgd_migrate_format") != V.STATE_FORMAT:
        missing["upgd_migrate_format"] = V.STATE_FORMAT
    if _version(sd) == V.VGS_VERSION and not missing:
        return None
    new = _ordered({**sd, **missing, "vgs_version": V.VGS_VERSION})
    added = ", ".join(k for k in missing if k not in sd)
    none_yet = "" if V.has_statistics(sd) else "; no statistics yet, they start at the next step"
    return Outcome(new, [Note("info", f"VGS {_version(sd)} -> {V.VGS_VERSION}"
                                      + (f" (added {added})" if added else "") + none_yet)])
