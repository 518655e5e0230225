"""The one table of legacy knowledge: optimizer names, kwargs, VGS keys, plausible sigma ranges.

Read by the linter, the schema export and (later) the migrators, so a fact changes in one place.
Pure data: importing this module must stay cheap and must never import torch.
"""
from __future__ import annotations

import re

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Param:
    """One keyword argument: its YAML kind, default, bounds and a one-line meaning.

    kind is one of: float, int, bool, betas (two floats), optional_float, optional_bool,
    false (a bool that must be false: UPGDW refuses amsgrad=True), choice (one of ``choices``).
    """

    kind: str
    default: Any
    doc: str
    ge: float | None = None
    gt: float | None = None
    lt: float | None = None
    le: float | None = None
    choices: tuple[str, ...] | None = None


def _lr(default: float) -> Param:
    return Param("float", default, "Learning rate.", ge=0.0)


def _wd(default: float) -> Param:
    return Param("float", default, "Weight decay (L2 penalty; decoupled for UPGD types).", ge=0.0)


_EPS = Param("float", 1e-8, "Term added to the Adam denominator for numerical stability.", ge=0.0)
_BETAS = Param("betas", (0.9, 0.999), "Adam decays (beta1, beta2) of the moment estimates.")
_SIGMA = Param("float", 0.001, "Noise scale: an absolute std with adaptive_noise off, a relative "
               "noise-to-update ratio with it on.", ge=0.0)
_UTILITY = Param("float", 0.999, "Decay of the utility trace.", ge=0.0, lt=1.0)

# The adaptive-noise options. The reference UPGD lacked them; the shipped UPGD takes them too
# (docs/optimizers.md defines relative noise for UPGD on the gradient itself).
_ADAPTIVE_NOISE: dict[str, Param] = {
    "adaptive_noise": Param("bool", False, "Make sigma a relative noise-to-update ratio."),
    "noise_beta": Param("float", 0.999, "EMA decay of the noise scale when "
                        "instant_noise_scale is false.", ge=0.0, lt=1.0),
    "min_noise_std": Param("float", 1e-6, "Floor of the adaptive per-element noise std.", ge=0.0),
    "instant_noise_scale": Param("bool", True, "Scale noise by the current rms instead of an EMA."),
}

# Options of this package's optimizers that the reference constructors lack (a TypeError there).
_PACKAGE_ONLY: dict[str, Param] = {
    "foreach": Param("optional_bool", None, "Use the multi-tensor implementation (null: auto)."),
    "noise_sync": Param("choice", "auto", "Under torch.distributed: draw the noise from streams "
                        "every rank shares (auto) or from each rank's own RNG (off).",
                        choices=("auto", "off")),
}

# The update rule of UPGD and AdaptiveUPGD (UPGDW keeps the reference signature).
_UPDATE: dict[str, Param] = {
    "update": Param("choice", "reference", "The update rule: this package's (reference) or the "
                    "UPGD paper's gate and 2*lr step (paper).",
                    choices=("reference", "paper")),
}

_TORCH_FLAGS: dict[str, Param] = {
    "maximize": Param("bool", False, "Maximize the objective instead of minimizing."),
    "foreach": Param("optional_bool", None, "Use the foreach implementation (null: auto)."),
    "differentiable": Param("bool", False, "Allow autograd through the optimizer step."),
    "fused": Param("optional_bool", None, "Use the fused implementation (null: auto)."),
}

_ADAM_COMMON: dict[str, Param] = {
    "betas": _BETAS,
    "eps": _EPS,
    "amsgrad": Param("bool", False, "Use the AMSGrad variant."),
    "capturable": Param("bool", False, "Allow CUDA graph capture."),
    **_TORCH_FLAGS,
}

# Canonical optimizer name -> keyword arguments its constructor accepts (reference defaults;
# the UPGD types also take _PACKAGE_ONLY, which only this package's classes accept).
OPTIMIZERS: dict[str, dict[str, Param]] = {
    "UPGD": {"lr": _lr(1e-5), "weight_decay": _wd(0.001), "beta_utility": _UTILITY,
             "sigma": _SIGMA, **_ADAPTIVE_NOISE, **_PACKAGE_ONLY, **_UPDATE},
    "AdaptiveUPGD": {
        "lr": _lr(1e-5), "weight_decay": _wd(0.001), "beta_utility": _UTILITY, "sigma": _SIGMA,
        "beta1": Param("float", 0.9, "Adam decay of the first moment.", ge=0.0, lt=1.0),
        "beta2": Param("float", 0.999, "Adam decay of the second moment.", ge=0.0, lt=1.0),
        "eps": _EPS, **_ADAPTIVE_NOISE, **_PACKAGE_ONLY, **_UPDATE},
    "UPGDW": {"lr": _lr(1e-4), "betas": _BETAS, "eps": _EPS, "weight_decay": _wd(0.01),
              "sigma": _SIGMA,
              "amsgrad": Param("false", False, "Must be false: UPGDW refuses amsgrad=True."),
              **_PACKAGE_ONLY},
    "adam": {"lr": _lr(1e-3), "weight_decay": _wd(0.0), **_ADAM_COMMON,
             "decoupled_weight_decay": Param("bool", False, "Decouple weight decay (AdamW).")},
    "adamw": {"lr": _lr(1e-3), "weight_decay": _wd(0.01), **_ADAM_COMMON},
    "sgd": {"lr": _lr(1e-3),
            "momentum": Param("float", 0.0, "Momentum factor.", ge=0.0),
            "dampening": Param("float", 0.0, "Dampening for momentum."),
            "weight_decay": _wd(0.0),
            "nesterov": Param("bool", False, "Use Nesterov momentum."),
            **_TORCH_FLAGS},
}

UPGD_TYPES = ("UPGD", "AdaptiveUPGD", "UPGDW")
SGD_TYPES = ("UPGD",)  # noise added to the raw gradient, so VGS scaling reaches it in full

# Every spelling seen in real configs (and torch's own class names) -> canonical name.
ALIASES: dict[str, str] = {
    "AdaptiveUPGD": "AdaptiveUPGD", "adaptive_upgd": "AdaptiveUPGD",
    "UPGD": "UPGD", "upgd": "UPGD", "UPGDW": "UPGDW", "upgdw": "UPGDW",
    "adam": "adam", "Adam": "adam", "adamw": "adamw", "AdamW": "adamw",
    "sgd": "sgd", "SGD": "sgd",
}

# VGS constructor options and the first version that reads each.
VGS_PARAMS: dict[str, Param] = {
    "enabled": Param("bool", True, "Turn gradient scaling on."),
    "alpha": Param("float", 0.1, "Strength: factor = 1 / (1 + alpha * normalised variance).",
                   ge=0.0),
    "beta": Param("float", 0.99, "EMA decay of the per-tensor gradient statistics.",
                  ge=0.0, lt=1.0),
    "eps": Param("float", 1e-8, "Stabiliser of the normalised variance.", gt=0.0),
    "warmup_steps": Param("int", 100, "Steps with factor 1 before scaling starts.", ge=0),
    "min_scaling_factor": Param("float", 0.1, "Lower clamp of the scaling factor.",
                                gt=0.0, le=1.0),
    "variance_cap": Param("optional_float", 50.0, "Cap of the normalised variance "
                          "(null: no cap).", gt=0.0),
}
VGS_ONLY_IN: dict[str, str] = {"min_scaling_factor": "3.2", "variance_cap": "3.2"}
VGS_VERSIONS = ("1", "2.0", "3.0", "3.1", "3.2")
# Keys found in real VGS blocks that no VGS version has ever read.
VGS_IGNORED_KEYS = ("accumulation_steps", "clip_threshold")

# Layout (c): flat trainer kwargs beside optimizer_class.
FLAT_VGS_SWITCH = "variance_gradient_scaling"
FLAT_VGS_PREFIX = "vgs_"

# Plausible sigma ranges. Relative: noise 1% to 50% of the update (real migrated configs use
# 0.05-0.1). Absolute: stds seen in legacy configs are 0.0005-0.005; above 0.01 is almost
# certainly a relative ratio typed into a config that still reads it as absolute.
RELATIVE_SIGMA_RANGE: tuple[float, float] = (0.01, 0.5)
ABSOLUTE_SIGMA_MAX: dict[str, float] = {"UPGD": 0.01, "AdaptiveUPGD": 0.01, "UPGDW": 0.01}


def relative_sigma_excess(sigma: float, plausible: tuple[float, float] = RELATIVE_SIGMA_RANGE
                          ) -> tuple[str, str] | None:
    """``("error" | "warning", why)`` when a relative sigma is too large to be meant, else None.

    Above 1 the noise outweighs the update: almost surely a percentage typed as a ratio (5 for
    5%), so ``why`` suggests the ratio. One check for lint (UPG106, UPG107) and ``config
    --sigma-ratio``; ``why`` completes "sigma 5 is ...".
    """
    if sigma > 1:
        return "error", (f"a noise-to-update ratio of {sigma * 100:g}%: above 1 the noise "
                         f"outweighs the update (did you mean {sigma / 100:g}?)")
    low, high = plausible
    if sigma > high:
        return "warning", (f"above the plausible relative range {low:g}-{high:g}: noise "
                           f"{sigma * 100:g}% of the update")
    return None


def ratio_caution(ratio: float) -> str | None:
    """Why a relative sigma ``config`` is asked to write is unusual ("is ..."), or None: above
    or below the plausible relative range. Written all the same (the user chose it), but said."""
    excess = relative_sigma_excess(ratio)
    if excess is not None:
        return excess[1]
    low, high = RELATIVE_SIGMA_RANGE
    if ratio < low:
        return (f"below the plausible relative range {low:g}-{high:g}: noise {ratio * 100:g}% "
                "of the update (written all the same; lint trusts the value config writes "
                "while it stays unedited)")
    return None


def accepts(optimizer: str, key: str) -> bool:
    """True when the canonical ``optimizer`` takes ``key`` as a keyword argument."""
    return key in OPTIMIZERS[optimizer]


def owners(key: str) -> list[str]:
    """The canonical optimizers that accept ``key``, in table order."""
    return [name for name, params in OPTIMIZERS.items() if key in params]


@dataclass(frozen=True)
class Migration:
    """One named config migration: the lint codes it always fixes and what it does.

    An ``unsafe`` migration may change what the user's own code reads, so, as ruff's unsafe
    fixes, it runs only when asked (``config --unsafe-fixes``).
    """

    id: str
    fixes: tuple[str, ...]
    summary: str
    unsafe: bool = False


# The ordered registry of `upgd-migrate config`. Order matters: each pass reads the text the
# previous one wrote (instant-noise-scale needs adaptive_noise already on; the sigma marker must
# record the value as the user wrote it, before yaml11-floats respells it).
MIGRATIONS: tuple[Migration, ...] = (
    Migration("adaptive-noise", ("UPG101", "UPG103"),
              "UPGD/AdaptiveUPGD: set adaptive_noise: true and convert an absolute sigma to a "
              "relative ratio"),
    Migration("instant-noise-scale", ("UPG105",),
              "under VGS with adaptive noise: instant_noise_scale: false -> true"),
    Migration("yaml11-floats", ("UPG304",),
              "respell numbers PyYAML reads as strings (1e-6 -> 1.0e-6)"),
    Migration("vgs-unread-keys", ("UPG203",),
              "comment out VGS keys no VGS version reads (accumulation_steps, clip_threshold); "
              "only with --unsafe-fixes: the user's own trainer may read them", unsafe=True),
)
UNSAFE_FIXES_OPTION = "--unsafe-fixes"
MIGRATED_CODES = frozenset(code for m in MIGRATIONS if not m.unsafe for code in m.fixes)
UNSAFE_CODES = frozenset(code for m in MIGRATIONS if m.unsafe for code in m.fixes)

# The marker `upgd-migrate config` leaves on a line whose value it changed, recording the old
# value and the one it wrote: `# upgd-migrate: sigma was 0.001 (absolute), set 0.00461`. A sigma
# on a line carrying it is relative by decision: config never converts it again on its own and
# lint never reads it as absolute (UPG102). While the value is still the one config wrote, lint
# trusts it (a calibrated ratio is often below the plausible range: UPG101/UPG106 not reported);
# once edited, or under an older marker without `, set`, it is checked against the relative
# range like any value (a later edit back to 0.001 is UPG101).
MARKER = "upgd-migrate:"
SIGMA_MARKER_RE = r"#.*\bupgd-migrate:[^#]*\bsigma was\b"
SIGMA_SET_RE = r"#.*\bupgd-migrate:[^#]*\bsigma was\b[^#;]*?, set ([^\s;#]+)"
SIGMA_MARKER_HONOURED = ("UPG102",)
SIGMA_MARKER_NOTED = ("UPG101",)  # on a marked line: config will not convert it twice


def sigma_set_by_config(line: str) -> float | None:
    """The sigma `config` wrote on ``line``, from its marker; None without one (or an older
    marker that did not record it)."""
    match = re.search(SIGMA_SET_RE, line)
    try:
        return float(match.group(1)) if match else None
    except ValueError:  # a hand-edited marker: it vouches for nothing
        return None
DEFAULT_SIGMA_RATIO = 0.05  # the seed's documented relative sigma ("0.05 = 5%")
