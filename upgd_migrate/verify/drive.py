"""Prove a state by running it: load it into the packaged optimizer over proxy parameters of the
saved shapes and drive it with gradients drawn from its own saved moment statistics.

Per optimizer state: the noise-to-update ratio against its target (sigma, when adaptive), the
amplification ``r(c) / r(1)`` for gradient scale factors 0.5 and 0.1 and for the packaged VGS
(same seeds), the first step's noise level against the pre-migration level and, for a legacy
adaptive state, the level the code that wrote it resumes at (see :mod:`.levels`), and finiteness.
"""
from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch

from upgd_migrate.verify import proxy as P, sample as S, verdicts
from upgd_migrate.verify.nodynamo import no_dynamo_import
from upgd_migrate.verify.proxy import MOMENTS
from upgd_migrate.verify.verdicts import Check, StateReport
from upgd_migrate.checkpoint.detect import generation, optimizer_class, vgs_version
from upgd_migrate.optim import UPGD, UPGDW, AdaptiveUPGD, NoiseRecorder, VarianceGradientScaler
from upgd_migrate.optim.vgs import LegacyVGSStateWarning, has_statistics

SCALES = (0.5, 0.1)
DEFAULT_STEPS = 32
OPTIMIZERS = {"AdaptiveUPGD": AdaptiveUPGD, "UPGD": UPGD, "UPGDW": UPGDW}


VGS_KWARGS = ("enabled", "beta", "alpha", "eps", "min_scaling_factor", "variance_cap")


def _scaler(params: list, source: Mapping[str, Any] | None) -> VarianceGradientScaler:
    """The container's VGS state, else a scaler from config values, else defaults.

    Warmup is off for the config and default scalers: K steps of warmup would hide scaling.
    """
    fresh = dict(warmup_steps=0)
    if source is not None and "step_count" not in source:
        fresh.update({k: source[k] for k in VGS_KWARGS if k in source})
    vgs = VarianceGradientScaler(params, **fresh)
    if source is not None and "step_count" in source:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", LegacyVGSStateWarning)
                vgs.load_state_dict(copy.deepcopy(dict(source)))
        except ValueError:  # another model's scaler: keep the fresh one
            vgs = VarianceGradientScaler(params, **fresh)
    return vgs


@dataclass
class Run:
    recorder: NoiseRecorder
    finite: bool
    factors: list[float]


def _vgs_factors(sd, cls: str, vgs_state, steps: int, seed: int) -> list[float]:
    """The packaged VGS's factor per step for whole-tensor gradient statistics (see
    :mod:`.sample`): the scaler sees each tensor as two elements with its mean and mean square."""
    whole = []
    for g in sd["param_groups"]:
        for pid in g["params"]:
            entry = sd["state"].get(pid)
            numel, found = math.prod(P.shape_of(entry)), P.moments(entry, g, cls)
            whole.append(S.WholeTensorStats(None, None, numel) if found is None
                         else S.WholeTensorStats.of_variance(*found, numel))
    params = [torch.nn.Parameter(torch.zeros(2)) for _ in whole]
    if vgs_state is not None and isinstance(vgs_state.get("param_numel"), torch.Tensor):
        vgs_state = {**vgs_state, "param_numel": torch.full((len(params),), 2.0)}
    vgs = _scaler(params, vgs_state)
    gen = torch.Generator().manual_seed(seed)
    factors = []
    for _ in range(steps):
        for p, w in zip(params, whole):
            p.grad = w.draw(gen)
        factors.append(vgs.scale_gradients())
        vgs.step()
    return factors


def _drive(proxy: P.Proxy, grads: P.Gradients, cls: str, scale: float | str, vgs_state,
           known: list[float] | None, seed: int, device: torch.device, saved_ok: bool) -> Run:
    """One scenario: fresh proxy parameters, the state loaded, ``steps`` steps of the shared
    gradients times ``scale`` (or times the VGS's factors: ``known`` ones for a sampled proxy,
    else the packaged VGS on the proxy itself)."""
    params, groups = proxy.fresh()
    opt = OPTIMIZERS[cls]([{"params": g} for g in groups])
    opt.load_state_dict(proxy.state_copy())
    vgs = _scaler(params, vgs_state) if scale == "vgs" and known is None else None
    factors: list[float] = []
    rec = S.ObservedRecorder(opt, {id(p): n for p, n in zip(params, proxy.numels)})
    forked = [device] if device.type == "cuda" else []  # the noise is drawn on the device
    with torch.random.fork_rng(devices=forked):
        torch.manual_seed(seed)  # the same noise draws in every scenario
        for t, step_grads in enumerate(grads.each_step()):
            factor = known[t] if known is not None else (scale if scale != "vgs" else 1.0)
            for p, g in zip(params, step_grads):
                p.grad = g * factor  # a new tensor: the draws are shared by the scenarios
            if vgs is not None:
                factors.append(vgs.scale_gradients())
            elif known is not None:
                factors.append(factor)
            rec.arm()
            opt.step()
            if vgs is not None:
                vgs.step()
    tensors = params + [v for s in opt.state.values() for v in s.values()
                        if isinstance(v, torch.Tensor)]
    finite = all(S.finite(t) for t in tensors)
    return Run(rec, finite and saved_ok, factors)


def _target(sd: Mapping[str, Any]) -> float | None:
    """Numel-weighted sigma when every group is adaptive; None for fixed noise."""
    groups = sd["param_groups"]
    if not groups or not all(g.get("adaptive_noise") for g in groups):
        return None
    pairs = [(float(g["sigma"]), math.prod(P.shape_of(sd["state"].get(p))))
             for g in groups for p in g["params"]]
    total = sum(n for _, n in pairs)
    return sum(s * n for s, n in pairs) / total if total else None


def verify_optimizer(sd: Mapping[str, Any], where: str, vgs_state=None,
                     steps: int = DEFAULT_STEPS, seed: int = 0,
                     sample: int = S.DEFAULT_SAMPLE,
                     device: torch.device | str = "cpu") -> StateReport:
    cls = optimizer_class(sd)
    if cls is None:
        return StateReport(where, "optimizer", "-", "-", checks=[
            Check("loads", None, "not a UPGD-family optimizer state: not verified")])
    report = StateReport(where, "optimizer", cls, generation(sd, cls))
    noisy = any(g.get("adaptive_noise") or float(g["sigma"]) != 0.0 for g in sd["param_groups"])
    if not noisy:
        report.checks.append(Check("noise", None, "sigma is 0: no noise to verify"))
        return report
    device = torch.device(device)
    proxy = P.build(sd, cls, seed, device, sample)
    grads = P.Gradients(proxy, seed, steps)
    saved_ok = not proxy.sampled or S.saved_finite(sd)  # the sampled run sees only part of it
    known = _vgs_factors(sd, cls, vgs_state, steps, seed) if proxy.sampled else None

    def drive(scale: float | str) -> Run:
        return _drive(proxy, grads, cls, scale, vgs_state, known if scale == "vgs" else None,
                      seed, device, saved_ok)

    with no_dynamo_import():  # verify compiles nothing (see .nodynamo)
        base = drive(1.0)
        runs = {str(c): drive(c) for c in SCALES}
        runs["vgs"] = drive("vgs")
    verdicts.fill(report, sd, base, runs, target=_target(sd), has_stats=cls in MOMENTS)
    report.series = {"ratio": {"unscaled": base.recorder.weighted_ratios(),
                               **{f"x{c}": runs[str(c)].recorder.weighted_ratios()
                                  for c in SCALES},
                               "VGS": runs["vgs"].recorder.weighted_ratios()},
                     "level": base.recorder.noise_levels(), "vgs_factor": runs["vgs"].factors}
    return report


def verify_vgs(sd: Mapping[str, Any], where: str,
               numels: Sequence[int] | None = None) -> StateReport:
    """Load into the packaged scaler (sized by the state's param_numel, else the optimizer's)."""
    version = vgs_version(sd)
    report = StateReport(where, "vgs", "VarianceGradientScaler", f"v{version}")
    numel = sd.get("param_numel")
    if not isinstance(numel, torch.Tensor) and numels:
        numel = torch.tensor([float(n) for n in numels])
    # None statistics: a reference VGS saved before its first step or right after a trainer
    # load (update_parameters resets them); in any version this means "none yet".
    none_yet = version != "1" and not has_statistics(sd)
    if not isinstance(numel, torch.Tensor) and not none_yet:
        report.checks.append(Check("loads", False, "a v1 state, without per-parameter "
                                                   "statistics: migrate it first (upgd-migrate "
                                                   "checkpoint)"))
        return report
    params = None if not isinstance(numel, torch.Tensor) else [
        torch.nn.Parameter(torch.zeros(max(int(n), 1))) for n in numel.tolist()]
    vgs = VarianceGradientScaler(params)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", LegacyVGSStateWarning)
        try:
            vgs.load_state_dict(copy.deepcopy(dict(sd)))
        except ValueError as e:
            report.checks.append(Check("loads", False, str(e)))
            return report
    legacy = [str(w.message) for w in caught if issubclass(w.category, LegacyVGSStateWarning)]
    if legacy:
        report.checks.append(Check("loads", False, legacy[0]))
    elif none_yet:
        report.checks.append(Check("loads", True, f"loads as VGS {version} with no statistics "
                                                  "yet (saved before its first step or right "
                                                  "after a trainer load): they start at the "
                                                  "next step"))
    else:
        report.checks.append(Check("loads", True, f"loads as VGS {version} without warnings"))
    factor = vgs.get_scaling_factor()
    report.metrics["factor"] = factor
    report.checks.append(Check("finite", math.isfinite(factor), f"scaling factor {factor:.4g}"))
    return report


def _numels(sd: Mapping[str, Any]) -> list[int]:
    return [math.prod(P.shape_of(sd["state"].get(p))) for g in sd["param_groups"]
            for p in g["params"]]


def verify_states(slots: Sequence[tuple[str, str, Mapping[str, Any]]], steps: int = DEFAULT_STEPS,
                  seed: int = 0, vgs_config: Mapping[str, Any] | None = None,
                  sample: int = S.DEFAULT_SAMPLE,
                  device: torch.device | str = "cpu") -> list[StateReport]:
    """Verify every (where, kind, state) of one container; its VGS state drives the VGS run.
    ``device`` holds the proxy parameters and the optimizers driving them."""
    vgs_state = next((st for _, kind, st in slots if kind == "vgs"), None)
    if vgs_state is None and vgs_config:
        vgs_state = vgs_config
    numels = next((_numels(st) for _, kind, st in slots
                   if kind == "optimizer" and optimizer_class(st)), None)
    reports = []
    with S.one_thread(sample):
        for where, kind, state in slots:
            if kind == "optimizer":
                reports.append(verify_optimizer(state, where, vgs_state, steps, seed,
                                                        sample=sample, device=device))
            else:
                reports.append(verify_vgs(state, where, numels))
    return reports
