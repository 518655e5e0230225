"""Turn verify's runs (``Run``: a NoiseRecorder, finiteness, VGS factors) into pass/fail checks."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from upgd_migrate.verify import levels
from upgd_migrate.optim.metrics import amplification

RATIO_TOL = 0.05  # relative, on the K-step aggregate
AMP_TOL = 0.03
JUMP = 1.5  # a first-step level outside [1/JUMP, JUMP] x the pre-migration level fails


@dataclass
class Check:
    name: str
    ok: bool | None  # None: not applicable to this state
    detail: str


@dataclass
class StateReport:
    where: str
    kind: str
    cls: str
    generation: str
    metrics: dict[str, Any] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    # Per-step values of the runs behind the metrics, for ``verify --plot``: "ratio" maps each
    # scenario to its numel-weighted ratio per step, "level" is the unscaled run's noise level.
    series: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(c.ok is not False for c in self.checks)

    def check(self, name: str) -> Check | None:
        return next((c for c in self.checks if c.name == name), None)


def _jump(level: float, pre: float) -> tuple[bool, str]:
    q = level / pre if pre > 0 else math.inf
    if q > JUMP:
        return False, f"spike x{q:.3g}"
    if q < 1.0 / JUMP:
        return False, f"drop x{q:.3g}"
    return True, f"x{q:.3g}"


def _ratio_check(report, sd, ratio: float, target: float | None) -> None:
    report.metrics.update(ratio=ratio, target=target)
    if target is None:
        sigma = ", ".join(f"{float(g['sigma']):g}" for g in sd["param_groups"])
        report.checks.append(Check("ratio", None, f"{ratio:.4g} (fixed noise: sigma {sigma} "
                                                  "is an absolute std, no ratio target)"))
        return
    ok = abs(ratio / target - 1.0) <= RATIO_TOL if target > 0 else ratio == 0
    report.checks.append(Check("ratio", ok, f"{ratio:.4g} vs target {target:.4g}"))


def _amplification_check(report, base: float, runs: Mapping[str, Any]) -> None:
    amps = {k: amplification(r.recorder.ratio(), base) for k, r in runs.items()}
    report.metrics["amplification"] = amps
    factors = runs["vgs"].factors
    report.metrics["vgs_factor"] = [min(factors), max(factors)] if factors else None
    text = ", ".join(f"{'c=' + k if k != 'vgs' else 'VGS'}: {a:.3f}" for k, a in amps.items())
    if report.cls == "UPGDW":
        report.checks.append(Check("amplification", None, f"{text} (UPGDW has fixed noise "
                                                          "only: not checked)"))
        return
    ok = all(abs(a - 1.0) <= AMP_TOL for a in amps.values())
    report.checks.append(Check("amplification", ok, text))


def _first_step_checks(report, sd, base, has_stats: bool) -> None:
    first = base.recorder.first_step_noise_rms()
    pre = levels.pre_migration_level(sd)
    ref, how = levels.reference_resume_level(sd)
    report.metrics.update(first_step=first, pre_migration=pre, reference_resume=ref)
    if pre is None or not has_stats:
        why = "no saved gradient statistics" if not has_stats else "no pre-migration level"
        report.checks.append(Check("first step", None, f"{first:.3g} ({why})"))
        return
    ok, text = _jump(first, pre)
    report.checks.append(Check("first step", ok, f"{text}: {first:.3g} vs pre-migration "
                                                 f"{pre:.3g}"))
    if ref is None and "KeyError" in how:
        report.checks.append(Check("reference resume", False, f"{how}: the code that wrote "
                                                              "this state crashes on resume"))
    elif ref is not None:
        ok, text = _jump(ref, pre)
        report.checks.append(Check("reference resume", ok, f"{text}: {ref:.3g} on resume "
                                                           f"({how}) vs {pre:.3g}"))


def fill(report: StateReport, sd: Mapping[str, Any], base, runs: Mapping[str, Any],
         target: float | None, has_stats: bool) -> None:
    """``base``: the unscaled run; ``runs``: scaled ones by label; ``target``: sigma if adaptive."""
    ratio = base.recorder.ratio()
    _ratio_check(report, sd, ratio, target)
    _amplification_check(report, ratio, runs)
    _first_step_checks(report, sd, base, has_stats)
    finite = base.finite and all(r.finite for r in runs.values()) and all(
        math.isfinite(x) for x in (ratio, *report.metrics["amplification"].values()))
    report.checks.append(Check("finite", finite, "all parameters, states and ratios finite"
                               if finite else "non-finite values after stepping"))

