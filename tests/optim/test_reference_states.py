"""States exactly as the reference code writes them, built here as plain dicts in its layout
(the key sets, the Python int ``step``, the float ``grad_norm_ema`` that becomes a 0-dim tensor
after the first step, the None statistics of a fresh or just-reloaded VGS), load into the
package's classes, step, and save again loadable with ``weights_only=True``."""
from __future__ import annotations

import io
import math
import warnings

import pytest
import torch

from upgd_migrate.optim import (
    UPGD,
    UPGDW,
    AdaptiveUPGD,
    NoiseMonitor,
    NoiseRecorder,
    VarianceGradientScaler,
)
from upgd_migrate.optim.vgs import LegacyVGSStateWarning

SHAPES = [(4, 3), (4,), (2, 4), (2,)]


def _tensor(shape, seed: int, scale: float = 1e-2) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * scale


def _entries(kind: str, step: int, adaptive: bool) -> dict[int, dict]:
    state = {}
    for i, shape in enumerate(SHAPES):
        entry = {"step": step, "avg_utility": _tensor(shape, 10 + i, 1e-4)}
        if kind == "adaptive":
            entry.update(first_moment=_tensor(shape, 20 + i),
                         sec_moment=_tensor(shape, 30 + i).square())
            if adaptive:  # 1.0 until the first step, then a 0-dim tensor (p.grad.norm())
                entry["grad_norm_ema"] = 1.0 if step == 0 else torch.tensor(0.37 + i)
        elif kind == "upgdw":
            entry.update(exp_avg=_tensor(shape, 20 + i), exp_avg_sq=_tensor(shape, 30 + i) ** 2)
        state[i] = entry
    return state


def _optimizer_state(kind: str, step: int, adaptive: bool = False,
                     instant: bool = True) -> tuple[type, dict]:
    ids = list(range(len(SHAPES)))
    if kind == "upgd":
        group = {"lr": 1e-5, "weight_decay": 0.001, "beta_utility": 0.999, "sigma": 0.001}
        cls = UPGD
    elif kind == "upgdw":
        group = {"lr": 1e-4, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.01,
                 "sigma": 0.001, "amsgrad": False}
        cls = UPGDW
    else:
        group = {"lr": 1e-5, "weight_decay": 0.001, "beta_utility": 0.999,
                 "sigma": 0.05 if adaptive else 0.001, "beta1": 0.9, "beta2": 0.999,
                 "eps": 1e-8, "adaptive_noise": adaptive, "noise_beta": 0.999,
                 "min_noise_std": 1e-6, "instant_noise_scale": instant}
        cls = AdaptiveUPGD
    group["initial_lr"] = group["lr"]  # a trainer's key, kept untouched
    entries = _entries(kind, step, adaptive) if step else {}
    return cls, {"state": entries, "param_groups": [{**group, "params": ids}]}


OPTIMIZER_CASES = [
    ("adaptive", {"adaptive": False}), ("adaptive", {"adaptive": True}),
    ("adaptive", {"adaptive": True, "instant": False}),  # the EMA noise path
    ("upgd", {}), ("upgdw", {}),
]


def _round_trip(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize("step", [0, 57])
@pytest.mark.parametrize(("kind", "options"), OPTIMIZER_CASES)
def test_reference_optimizer_states_load_and_step(kind, options, step):
    cls, sd = _optimizer_state(kind, step, **options)
    params = [torch.nn.Parameter(_tensor(s, 40 + i, 0.1)) for i, s in enumerate(SHAPES)]
    opt = cls(params)
    opt.load_state_dict(_round_trip(sd))
    group = opt.param_groups[0]
    assert group["initial_lr"] == group["lr"]
    if kind == "adaptive":
        assert (group["adaptive_noise"], group["instant_noise_scale"]) == (
            options["adaptive"], options.get("instant", True))
    before = [p.detach().clone() for p in params]
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen) * 1e-2
        opt.step()
    assert all(torch.isfinite(p).all() and not torch.equal(p, b) for p, b in zip(params, before))
    entry = opt.state[params[0]]
    assert int(entry["step"]) == step + 3
    again = cls([torch.nn.Parameter(p.detach().clone()) for p in params])
    again.load_state_dict(_round_trip(opt.state_dict()))


@pytest.mark.parametrize(("kind", "options"), OPTIMIZER_CASES)
def test_a_monitored_reference_state_steps_as_an_unmonitored_one(kind, options):
    """A reference state resumed under a NoiseMonitor: same parameters as without it, and the
    logged ratio is what the hook-based recorder measures on the same step."""
    cls, sd = _optimizer_state(kind, 57, **options)
    runs = []
    for watch in (False, True):
        torch.manual_seed(5)
        params = [torch.nn.Parameter(_tensor(s, 40 + i, 0.1)) for i, s in enumerate(SHAPES)]
        opt = cls(params)
        opt.load_state_dict(_round_trip(sd))
        for i, p in enumerate(params):
            p.grad = _tensor(p.shape, 60 + i)
        if watch:
            with NoiseMonitor(opt, every=1) as monitor:
                opt.step()
            logged = monitor.pop()["upgd/noise_to_update_ratio"]
        else:
            with NoiseRecorder(opt) as recorder:
                opt.step()
            measured = recorder.steps[0].weighted_ratio()
        runs.append([p.detach().clone() for p in params])
    # the recorder takes the sequential path, so the two runs agree to rounding, not bits
    for a, b in zip(*runs):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9)
    assert logged == pytest.approx(measured, rel=1e-4)


# --- VGS: the reference's state_dict() in every version ---

N = len(SHAPES)
NUMEL = [float(math.prod(s)) for s in SHAPES]


def _vgs_state(version: str | None, layout: str) -> dict:
    """``layout``: "fresh" (never stepped), "stepped", "reloaded" (after the trainer's load:
    update_parameters() reset the per-parameter statistics, step_count and globals kept)."""
    sd = {"enabled": True, "beta": 0.99, "alpha": 0.1, "eps": 1e-8, "warmup_steps": 3,
          "step_count": 0 if layout == "fresh" else 240}
    if version is not None and version not in ("1.0",) and float(version) >= 3.2:
        sd.update(min_scaling_factor=0.1, variance_cap=50.0)
    stepped = layout != "fresh"
    sd.update(grad_mean_ema=0.012 if stepped else None, grad_var_ema=1e-4 if stepped else None,
              grad_norm_ema=0.8 if stepped else None, grad_max_ema=0.2 if stepped else None)
    if version in (None, "1.0"):
        if version:
            sd["vgs_version"] = version
        return sd
    tensors = layout == "stepped"
    sd.update(param_grad_mean_ema=_tensor((N,), 3) if tensors else None,
              param_grad_sq_ema=_tensor((N,), 4).square() if tensors else None,
              param_numel=torch.tensor(NUMEL) if tensors else None, vgs_version=version)
    return sd


def _load(vgs: VarianceGradientScaler, sd: dict) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vgs.load_state_dict(_round_trip(sd))
    return [str(w.message) for w in caught if issubclass(w.category, LegacyVGSStateWarning)]


def _step(vgs: VarianceGradientScaler, params: list, steps: int = 5) -> list[float]:
    gen, factors = torch.Generator().manual_seed(2), []
    for _ in range(steps):
        for p in params:
            p.grad = 0.05 + torch.randn(p.shape, generator=gen) * 1e-2
        factors.append(vgs.scale_gradients())
        vgs.step()
    return factors


@pytest.mark.parametrize("layout", ["fresh", "reloaded"])
@pytest.mark.parametrize("version", ["2.0", "3.0", "3.1", "3.2"])
def test_none_statistics_mean_no_statistics_yet_in_every_version(version, layout):
    sd = _vgs_state(version, layout)
    params = [torch.nn.Parameter(torch.zeros(s)) for s in SHAPES]
    vgs = VarianceGradientScaler(params)
    assert _load(vgs, sd) == []  # nothing to convert, nothing lost: no warning
    out = vgs.state_dict()
    assert out["step_count"] == sd["step_count"] and out["statistics_step_count"] == 0
    assert out["param_grad_mean_ema"] is None and out["grad_norm_ema"] == sd["grad_norm_ema"]
    factors = _step(vgs, params)
    assert all(math.isfinite(c) and 0.1 <= c <= 1.0 for c in factors)
    assert vgs.statistics_step_count == 5 and vgs.step_count == sd["step_count"] + 5
    assert vgs.state_dict()["param_numel"].tolist() == NUMEL
    if layout == "reloaded":  # warmup is over: the restarted statistics scale from step 2 on
        assert factors[0] == 1.0 and factors[-1] < 1.0


@pytest.mark.parametrize("version", ["3.1", "3.2"])
def test_stepped_compatible_states_keep_their_statistics(version):
    sd = _vgs_state(version, "stepped")
    params = [torch.nn.Parameter(torch.zeros(s)) for s in SHAPES]
    vgs = VarianceGradientScaler(params)
    assert _load(vgs, sd) == []
    assert torch.equal(vgs.param_grad_sq_ema, sd["param_grad_sq_ema"])
    assert vgs.statistics_step_count == 240  # the reference counted its statistics by steps
    assert all(math.isfinite(c) for c in _step(vgs, params))


@pytest.mark.parametrize("version", ["2.0", "3.0"])
def test_stepped_incompatible_states_warn_and_keep_their_statistics(version):
    sd = _vgs_state(version, "stepped")
    params = [torch.nn.Parameter(torch.zeros(s)) for s in SHAPES]
    vgs = VarianceGradientScaler(params)
    assert len(_load(vgs, sd)) == 1
    assert torch.equal(vgs.state_dict()["legacy_statistics"]["param_grad_mean_ema"],
                       sd["param_grad_mean_ema"])
    assert all(math.isfinite(c) for c in _step(vgs, params))


@pytest.mark.parametrize("label", [None, "1.0"])
def test_v1_with_or_without_the_default_label_warns_as_the_reference(label):
    sd = _vgs_state(label, "stepped")
    params = [torch.nn.Parameter(torch.zeros(s)) for s in SHAPES]
    vgs = VarianceGradientScaler(params)
    (message,) = _load(vgs, sd)
    assert message.startswith("VGS v3.1 CRITICAL FIX: a v1 state has no per-parameter statistics")
    assert vgs.state_dict()["grad_norm_ema"] == 0.8
    assert all(math.isfinite(c) for c in _step(vgs, params))


def test_a_scaler_without_parameters_loads_stepped_statistics_and_relinks():
    """The reference trainer's order on load: construct, load_state_dict, update_parameters."""
    sd = _vgs_state("3.2", "stepped")
    vgs = VarianceGradientScaler()
    assert _load(vgs, sd) == []
    assert torch.equal(vgs.state_dict()["param_grad_mean_ema"], sd["param_grad_mean_ema"])
    params = [torch.nn.Parameter(torch.zeros(s)) for s in SHAPES]
    vgs.update_parameters(params)
    assert vgs.state_dict()["param_grad_mean_ema"] is None  # restarted, as the reference
    assert all(math.isfinite(c) for c in _step(vgs, params))
