"""The VGS's state layouts: validation, state_dict, loading every version, pickle layouts, log keys.

Kept apart from :mod:`.vgs` (the algorithm) so that file stays short; everything here is
plain functions over a scaler's attributes.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from upgd_migrate.optim.vgs import VarianceGradientScaler

VGS_VERSION = "3.2"
STATE_FORMAT = 1
LEGACY_KEY = "legacy_statistics"
# EMA updates since the per-parameter statistics were last (re)started. Bias correction divides
# by 1 - beta**this, not by 1 - beta**step_count: after a legacy load or update_parameters()
# restarts the statistics but keeps step_count (so warmup is not re-applied), correcting by
# step_count would read the nearly empty EMAs as settled and collapse the factor.
STATISTICS_COUNT_KEY = "statistics_step_count"
GLOBAL_KEYS = ("grad_mean_ema", "grad_var_ema", "grad_norm_ema", "grad_max_ema")
TENSOR_KEYS = ("param_grad_mean_ema", "param_grad_sq_ema", "param_numel")
COMPATIBLE_VERSIONS = frozenset({"3.1", "3.2"})
# Same key names as 3.1, different statistics: never fed to today's algorithm (docs/checkpoints.md).
LEGACY_MEANINGS = {
    "1": "unknown: a v1 state defines no per-parameter statistics",
    "2.0": "EMA of E|g| / EMA of Var(g)",
    "3.0": "EMA of mean(g) / EMA of mean(g)^2",
}
# Every legacy-load warning starts with the reference's words: code (and tests) written against
# the reference match them (``pytest.warns(UserWarning, match="VGS v3.1 CRITICAL FIX")``).
REFERENCE_WARNING = "VGS v3.1 CRITICAL FIX"
HYPER_KEYS = ("enabled", "beta", "alpha", "eps", "warmup_steps")
_V32_KEYS = ("min_scaling_factor", "variance_cap")
_KNOWN_KEYS = frozenset(HYPER_KEYS + _V32_KEYS + GLOBAL_KEYS + TENSOR_KEYS + (
    "step_count", STATISTICS_COUNT_KEY, "vgs_version", "upgd_migrate_format", LEGACY_KEY))


class LegacyVGSStateWarning(UserWarning):
    """A legacy VGS state was loaded whose statistics today's algorithm cannot use."""


def version_label(sd: Any) -> str:
    """"1" for a v1 state (no label, or the reference's default label "1.0"), else the label."""
    label = str(sd["vgs_version"]) if "vgs_version" in sd else "1"
    return "1" if label in ("1", "1.0") else label


def has_statistics(sd: Any) -> bool:
    """True when the state holds per-parameter tensors (None or absent: no statistics yet)."""
    return any(sd.get(k) is not None for k in TENSOR_KEYS)


def validate(beta: float, alpha: float, eps: float, warmup_steps: Any, min_scaling_factor: float,
             variance_cap: float | None, strict: bool) -> None:
    """The reference's ranges and wording (``strict``: the constructor); a loaded state only
    needs values the factor is defined for, as this package accepted before (eps = 0 ...)."""
    integral = isinstance(warmup_steps, (int, float)) and not isinstance(warmup_steps, bool)
    checks = [
        (0.0 < beta < 1.0 if strict else 0.0 <= beta < 1.0, f"beta must be in (0, 1), got {beta}"),
        (0.0 <= alpha < math.inf, f"alpha must be non-negative, got {alpha}"),
        (0.0 < eps < math.inf if strict else 0.0 <= eps < math.inf,
         f"eps must be positive, got {eps}"),
        (warmup_steps >= 0, f"warmup_steps must be non-negative, got {warmup_steps}"),
        (integral and float(warmup_steps).is_integer(),
         f"warmup_steps must be an integer, got {warmup_steps}"),
        (0.0 < min_scaling_factor <= 1.0 if strict else 0.0 <= min_scaling_factor <= 1.0,
         f"min_scaling_factor must be in (0, 1], got {min_scaling_factor}"),
        (variance_cap is None or (variance_cap > 0.0 if strict else variance_cap >= 0.0),
         f"variance_cap must be positive when set, got {variance_cap}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)


def collect_params(parameters: Any) -> list[torch.Tensor]:
    """Flatten tensors or param-group dicts into one list; its order is the on-disk layout."""
    if isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    params: list[torch.Tensor] = []
    for item in parameters:
        if isinstance(item, dict):
            group = item["params"]
            params.extend([group] if isinstance(group, torch.Tensor) else group)
        else:
            params.append(item)
    if len({id(p) for p in params}) != len(params):
        # A repeated tensor would be scaled twice (c**2) by scale_gradients.
        raise ValueError("some parameters appear more than once in the VGS parameter list")
    return params


def fresh_statistics() -> dict[str, Any]:
    """Per-parameter attributes meaning "no statistics yet" (the reference's None layout)."""
    return {"_param_grad_mean_ema": None, "_param_grad_sq_ema": None, "_param_numel": None,
            "_param_ids": {}, "_param_stats": {}, "_statistics_step_count": 0,
            "_index_cache": None}


def zero_statistics(params: list[torch.Tensor], device: torch.device) -> dict[str, Any]:
    """Zero EMAs on ``device``; float32 is the on-disk layout."""
    n = len(params)
    return {"_param_grad_mean_ema": torch.zeros(n, dtype=torch.float32, device=device),
            "_param_grad_sq_ema": torch.zeros(n, dtype=torch.float32, device=device),
            "_param_numel": torch.tensor([float(p.numel()) for p in params],
                                         dtype=torch.float32, device=device),
            "_param_ids": {id(p): i for i, p in enumerate(params)}}


def global_vector(values: list[Any], device: torch.device) -> torch.Tensor | None:
    """The four global EMAs as one float64 vector (None when none is known yet)."""
    if all(v is None for v in values):
        return None
    return torch.tensor([math.nan if v is None else float(v) for v in values],
                        dtype=torch.float64, device=device)


def log_values(vgs: VarianceGradientScaler) -> dict[str, Any]:
    """The reference's ``vgs/*`` keys and this step's values (host floats: syncs, by design)."""
    out: dict[str, Any] = {}
    nv = vgs._per_param_nv()
    if nv is not None and nv.numel():
        q = torch.quantile(nv, torch.tensor([0.1, 0.5, 0.9], dtype=nv.dtype, device=nv.device))
        p10, p50, p90 = q.tolist()
        out.update({"vgs/stochastic_var_p10": p10, "vgs/stochastic_var_p50": p50,
                    "vgs/stochastic_var_p90": p90, "vgs/stochastic_var_mean": float(nv.mean())})
    if vgs._global_ema is not None:
        # The EMAs start at the first value, so they carry no zero-start bias: logged as they
        # are (the reference divides by 1 - beta**step_count, 100x too high at step 1).
        mean, var, norm, top = vgs._global_ema.tolist()
        out.update({"vgs/grad_norm_ema": norm, "vgs/grad_mean_ema_spatial": mean,
                    "vgs/grad_var_ema_spatial": var, "vgs/grad_max_ema": top})
    out.update({"vgs/normalized_variance": vgs.get_normalized_variance(),
                "vgs/scaling_factor": vgs.get_scaling_factor(),
                "vgs/step_count": float(vgs._step_count),
                "vgs/warmup_active": float(vgs._step_count < vgs.warmup_steps)})
    return out


_OLD_NAMES = {"step_count": "_step_count", "statistics_step_count": "_statistics_step_count",
              **{k: f"_{k}" for k in TENSOR_KEYS}}


def reference_layout(state: dict[str, Any]) -> dict[str, Any]:
    """A pickled scaler's attributes under the reference's names (this package's older layout
    used public names, held its parameters and a ``global_statistics`` dict)."""
    state = dict(state)
    state.pop("params", None)
    old_globals = state.pop("global_statistics", None)
    if isinstance(old_globals, dict):
        for key in GLOBAL_KEYS:
            state.setdefault(f"_{key}", old_globals.get(key))
    for old, new in _OLD_NAMES.items():
        if old in state:
            state[new] = state.pop(old)
    return state


def pickle_defaults(state: dict[str, Any]) -> dict[str, Any]:
    """Attributes a pickle from an older scaler lacks, at the values that scaler behaved with."""
    out: dict[str, Any] = {"enabled": True, "beta": 0.99, "alpha": 0.1, "eps": 1e-8,
                           "warmup_steps": 100, "track_per_param": True,
                           "min_scaling_factor": 0.1, "variance_cap": 50.0, "_step_count": 0,
                           **fresh_statistics(), LEGACY_KEY: None, "extra_state": {}}
    out.update(state)
    if "_statistics_step_count" not in state:  # the reference counted its statistics by steps
        has_stats = out["_param_grad_mean_ema"] is not None
        out["_statistics_step_count"] = int(out["_step_count"]) if has_stats else 0
    out["_index_cache"] = None
    return out


def state_dict_of(vgs: VarianceGradientScaler) -> dict[str, Any]:
    state: dict[str, Any] = {k: getattr(vgs, k) for k in HYPER_KEYS}
    state["step_count"] = vgs._step_count
    state[STATISTICS_COUNT_KEY] = vgs._statistics_step_count
    state.update(zip(GLOBAL_KEYS, vgs._global_floats()))
    for key in TENSOR_KEYS:
        value = getattr(vgs, f"_{key}")
        state[key] = None if value is None else value.detach().clone()
    state.update(vgs_version=VGS_VERSION, min_scaling_factor=vgs.min_scaling_factor,
                 variance_cap=vgs.variance_cap, upgd_migrate_format=STATE_FORMAT)
    if vgs.legacy_statistics is not None:
        state[LEGACY_KEY] = copy.deepcopy(vgs.legacy_statistics)
    state.update(copy.deepcopy(vgs.extra_state))
    return state


@dataclass
class Loaded:
    attributes: dict[str, Any]
    global_values: list[Any]
    warning: str | None


def read_state(state_dict: dict[str, Any], vgs: VarianceGradientScaler) -> Loaded:
    """Everything ``load_state_dict`` sets, checked first, so a refused state changes nothing."""
    sd = dict(state_dict)
    version = version_label(sd)
    if version not in COMPATIBLE_VERSIONS and version not in LEGACY_MEANINGS:
        raise ValueError(f"Unsupported VGS state version {version!r} "
                         "(supported: v1, 2.0, 3.0, 3.1, 3.2)")
    fmt = sd.get("upgd_migrate_format", STATE_FORMAT)
    if fmt > STATE_FORMAT:
        raise ValueError(f"VGS state has upgd_migrate_format {fmt}; this version reads "
                         f"up to {STATE_FORMAT}: upgrade upgd-migrate")
    saved = _saved_statistics(sd, vgs._parameters)
    # Missing keys keep the scaler's values, as the reference's loader does.
    hyper = {k: sd.get(k, getattr(vgs, k)) for k in HYPER_KEYS}
    msf = sd.get("min_scaling_factor", vgs.min_scaling_factor)
    cap = sd.get("variance_cap", vgs.variance_cap)
    validate(hyper["beta"], hyper["alpha"], hyper["eps"], hyper["warmup_steps"], msf, cap,
             strict=False)
    step = int(sd.get("step_count", 0))
    attrs: dict[str, Any] = {
        "enabled": bool(hyper["enabled"]), "beta": float(hyper["beta"]),
        "alpha": float(hyper["alpha"]), "eps": float(hyper["eps"]),
        "warmup_steps": int(hyper["warmup_steps"]), "min_scaling_factor": float(msf),
        "variance_cap": None if cap is None else float(cap), "_step_count": step,
        **fresh_statistics(), LEGACY_KEY: copy.deepcopy(sd.get(LEGACY_KEY)),
        "extra_state": copy.deepcopy({k: v for k, v in sd.items() if k not in _KNOWN_KEYS})}
    globals_ = [_number(sd.get(k)) for k in GLOBAL_KEYS]
    if saved is not None and version in COMPATIBLE_VERSIONS:
        attrs.update(saved)
        attrs["_statistics_step_count"] = int(sd.get(STATISTICS_COUNT_KEY, step))
        return Loaded(attrs, globals_, None)
    if saved is None and version != "1":
        return Loaded(attrs, globals_, None)  # no statistics yet: nothing to convert or lose
    if saved is None:
        message = (f"{REFERENCE_WARNING}: a v1 state has no per-parameter statistics: they "
                   f"start at the next step; its global statistics {list(GLOBAL_KEYS)} are "
                   "kept as loaded")
    else:
        meaning = LEGACY_MEANINGS[version]
        attrs[LEGACY_KEY] = {"vgs_version": version, "meaning": meaning,
                             **{k: torch.as_tensor(sd[k]).detach().clone() for k in TENSOR_KEYS}}
        message = (f"{REFERENCE_WARNING}: state version {version} holds incompatible "
                   f"per-parameter statistics ({meaning}): live statistics restart at the next "
                   f"step and the old ones are kept under {LEGACY_KEY!r}")
    return Loaded(attrs, globals_, f"{message}; step_count {step} was preserved, so warmup is "
                  "not re-applied, and the new statistics are bias-corrected from their own start")


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


def _saved_statistics(sd: dict[str, Any], params: list | None) -> dict[str, Any] | None:
    """The per-parameter tensors as float32 copies on the parameters' device; None when the
    state has none yet. A different parameter count or size is refused."""
    present = [k for k in TENSOR_KEYS if sd.get(k) is not None]
    if not present:
        return None
    if len(present) != len(TENSOR_KEYS):
        raise ValueError(f"VGS state has {present} but not all of {list(TENSOR_KEYS)}")
    saved = {}
    for key in TENSOR_KEYS:
        value = torch.as_tensor(sd[key]).detach()
        device = params[0].device if params else value.device
        saved[key] = value.to(device=device, dtype=torch.float32, copy=True).reshape(-1)
    if params is None:
        return {f"_{k}": v for k, v in saved.items()}  # checked when parameters are attached
    n = len(params)
    for key, value in saved.items():
        if value.numel() != n:
            raise ValueError(f"VGS state holds {value.numel()} saved entries in {key!r} but "
                             f"this scaler has {n} parameters: the state belongs to a "
                             "different model or parameter order")
    # Same count but other sizes: the statistics would land on the wrong tensors.
    ours = torch.tensor([float(p.numel()) for p in params])
    theirs = saved["param_numel"].cpu()
    wrong = ((theirs != ours) & (theirs != 0)).nonzero().flatten().tolist()
    if wrong:
        i = wrong[0]
        raise ValueError(f"VGS state param_numel[{i}] is {theirs[i].item():g} but parameter "
                         f"{i} has {ours[i].item():g} elements: the state belongs to a "
                         "different model or parameter order")
    return {f"_{k}": v for k, v in saved.items()} | {
        "_param_ids": {id(p): i for i, p in enumerate(params)}}
