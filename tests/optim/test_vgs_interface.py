"""The reference VGS interface, method by method: construction and validation, parameters=None
and update_parameters, update_statistics, compute_gradient_statistics, reset_statistics, the
logger's vgs/* keys, pickling in both attribute layouts, and no host round trip per step."""
from __future__ import annotations

import math
import pickle
import sys
import types
import warnings

import pytest
import torch
from optim_helpers import no_cuda_sync

from upgd_migrate.optim import VarianceGradientScaler

GLOBALS = ("_grad_mean_ema", "_grad_var_ema", "_grad_norm_ema", "_grad_max_ema")


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))


def _backward(model: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    model.zero_grad()
    x, y = torch.randn(5, 6, generator=gen), torch.randn(5, 3, generator=gen)
    torch.nn.functional.mse_loss(model(x), y).backward()


def _spatial(model: torch.nn.Module) -> dict[str, float]:
    """The reference's definitions, in float64 over the concatenated |g|."""
    grads = [p.grad.double() for p in model.parameters() if p.grad is not None]
    flat = torch.cat([g.abs().flatten() for g in grads])
    return {"grad_norm": float(torch.cat([g.flatten() for g in grads]).norm()),
            "grad_mean": float(flat.mean()), "grad_var": float(flat.var()),
            "grad_max": float(flat.max()), "num_params": len(grads)}


class Recorder:
    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def record(self, key: str, value: float) -> None:
        if not self.rows or key in self.rows[-1]:
            self.rows.append({})
        self.rows[-1][key] = value


def test_defaults_and_attributes():
    model = _model()
    vgs = VarianceGradientScaler(model.parameters())
    assert (vgs.enabled, vgs.beta, vgs.alpha, vgs.eps, vgs.warmup_steps) == (
        True, 0.99, 0.1, 1e-8, 100)
    assert (vgs.min_scaling_factor, vgs.variance_cap, vgs.track_per_param) == (0.1, 50.0, True)
    assert vgs._step_count == 0 and vgs._parameters == list(model.parameters())
    assert all(getattr(vgs, k) is None for k in GLOBALS)
    assert vgs._param_grad_mean_ema is None and vgs._logger is None
    assert repr(vgs) == ("VarianceGradientScaler(enabled=True, beta=0.99, alpha=0.1, eps=1e-08, "
                         "warmup_steps=100, min_scaling_factor=0.1, variance_cap=50.0, "
                         "step_count=0, version=3.2)")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"beta": 0.0}, "beta must be in (0, 1), got 0.0"),
    ({"beta": 1.0}, "beta must be in (0, 1), got 1.0"),
    ({"beta": math.nan}, "beta must be in (0, 1), got nan"),
    ({"alpha": -0.1}, "alpha must be non-negative, got -0.1"),
    ({"alpha": math.inf}, "alpha must be non-negative, got inf"),
    ({"eps": 0.0}, "eps must be positive, got 0.0"),
    ({"eps": -1e-8}, "eps must be positive, got -1e-08"),
    ({"warmup_steps": -10}, "warmup_steps must be non-negative, got -10"),
    ({"warmup_steps": 2.5}, "warmup_steps must be an integer, got 2.5"),
    ({"min_scaling_factor": 0.0}, "min_scaling_factor must be in (0, 1], got 0.0"),
    ({"min_scaling_factor": 1.5}, "min_scaling_factor must be in (0, 1], got 1.5"),
    ({"variance_cap": 0.0}, "variance_cap must be positive when set, got 0.0"),
])
def test_validation_messages(kwargs, message):
    with pytest.raises(ValueError) as info:
        VarianceGradientScaler(None, **kwargs)
    assert str(info.value) == message


def test_without_parameters_nothing_is_tracked_until_update_parameters():
    model = _model()
    vgs = VarianceGradientScaler(warmup_steps=0)
    _backward(model, 1)
    before = [p.grad.clone() for p in model.parameters()]
    assert vgs.scale_gradients() == 1.0 and vgs.get_scaling_factor() == 1.0
    vgs.step()
    assert vgs._step_count == 1 and vgs.compute_gradient_statistics()["num_params"] == 0
    assert all(torch.equal(p.grad, b) for p, b in zip(model.parameters(), before))
    sd = vgs.state_dict()
    assert sd["param_grad_mean_ema"] is None and sd["grad_norm_ema"] is None
    vgs.update_parameters(model.parameters())
    vgs.step()
    assert vgs._param_numel.tolist() == [float(p.numel()) for p in model.parameters()]
    assert vgs._grad_norm_ema == pytest.approx(_spatial(model)["grad_norm"], rel=1e-5)


def test_update_parameters_restarts_per_parameter_statistics_only():
    model, vgs = _trained(steps=3, warmup_steps=0)
    norm = vgs._grad_norm_ema
    vgs.update_parameters(model.parameters())
    assert vgs._param_grad_mean_ema is None and vgs._param_numel is None
    assert vgs._step_count == 3 and vgs._grad_norm_ema == norm  # kept, as the reference
    assert vgs.get_scaling_factor() == 1.0 and vgs.state_dict()["statistics_step_count"] == 0


def test_update_statistics_folds_without_counting_a_step():
    model, beta = _model(), 0.9
    vgs = VarianceGradientScaler(model.parameters(), beta=beta)
    _backward(model, 1)
    first = _spatial(model)
    mu1 = [float(p.grad.double().mean()) for p in model.parameters()]
    vgs.update_statistics()
    assert vgs._step_count == 0
    for key, attr in zip(("grad_mean", "grad_var", "grad_norm", "grad_max"), GLOBALS):
        assert getattr(vgs, attr) == pytest.approx(first[key], rel=1e-5)  # starts at the value
    _backward(model, 2)
    second = _spatial(model)
    mu2 = [float(p.grad.double().mean()) for p in model.parameters()]
    vgs.update_statistics()
    assert vgs._grad_mean_ema == pytest.approx(
        beta * first["grad_mean"] + (1 - beta) * second["grad_mean"], rel=1e-5)
    # Per-tensor EMAs start at zero (bias-corrected when read).
    expected = [beta * (1 - beta) * a + (1 - beta) * b for a, b in zip(mu1, mu2)]
    assert vgs._param_grad_mean_ema.tolist() == pytest.approx(expected, rel=1e-5)
    assert vgs._step_count == 0 and vgs.statistics_step_count == 2


def test_compute_gradient_statistics_matches_the_definitions():
    model = _model()
    vgs = VarianceGradientScaler(model.parameters())
    assert vgs.compute_gradient_statistics() == {"grad_norm": 0.0, "grad_mean": 0.0,
                                                 "grad_var": 0.0, "grad_max": 0.0,
                                                 "num_params": 0}
    _backward(model, 3)
    model[0].bias.grad = None
    got, want = vgs.compute_gradient_statistics(), _spatial(model)
    assert got["num_params"] == want["num_params"] == 3
    assert got == pytest.approx(want, rel=1e-5)


def test_normalized_variance_and_factor_follow_the_90th_percentile():
    model = _model()
    vgs = VarianceGradientScaler(model.parameters(), warmup_steps=2, alpha=0.5)
    assert vgs.get_normalized_variance() == 0.0
    for seed in range(6):
        _backward(model, seed)
        vgs.step()
    t, b = vgs.statistics_step_count, vgs.beta
    mean = vgs._param_grad_mean_ema.double() / (1 - b**t)
    sq = vgs._param_grad_sq_ema.double() / (1 - b**t)
    nv = (sq - mean**2).clamp_min(0) / (mean.square().clamp_min(1e-12) + vgs.eps)
    want = float(torch.quantile(nv, 0.9))
    assert vgs.get_normalized_variance() == pytest.approx(want, rel=1e-9)
    c = max(1 / (1 + 0.5 * min(want, 50.0)), 0.1)
    assert vgs.get_scaling_factor() == pytest.approx(c, rel=1e-9)
    _backward(model, 9)
    before = [p.grad.clone() for p in model.parameters()]
    assert vgs.scale_gradients() == pytest.approx(c, rel=1e-9)
    for p, g in zip(model.parameters(), before):
        torch.testing.assert_close(p.grad, g * c)


def test_reset_statistics_forgets_everything():
    model, vgs = _trained(steps=3, warmup_steps=0)
    vgs.reset_statistics()
    assert vgs._step_count == 0 and all(getattr(vgs, k) is None for k in GLOBALS)
    assert vgs._param_grad_mean_ema is None and vgs.get_scaling_factor() == 1.0


def test_the_private_step_count_is_read_and_written_as_the_reference_trainer_does():
    vgs = VarianceGradientScaler(_model().parameters(), warmup_steps=5)
    vgs._step_count += 7
    assert vgs.step_count == 7 and vgs.state_dict()["step_count"] == 7


LOG_KEYS = {"vgs/stochastic_var_p10", "vgs/stochastic_var_p50", "vgs/stochastic_var_p90",
            "vgs/stochastic_var_mean", "vgs/grad_norm_ema", "vgs/grad_mean_ema_spatial",
            "vgs/grad_var_ema_spatial", "vgs/grad_max_ema", "vgs/normalized_variance",
            "vgs/scaling_factor", "vgs/step_count", "vgs/warmup_active"}


def test_logger_records_the_reference_keys_each_step():
    model, log = _model(), Recorder()
    vgs = VarianceGradientScaler(model.parameters(), warmup_steps=2, logger=log)
    for seed in range(3):
        _backward(model, seed)
        vgs.scale_gradients()
        vgs.step()
    assert len(log.rows) == 3 and all(set(row) == LOG_KEYS for row in log.rows)
    last = log.rows[-1]
    assert last["vgs/step_count"] == 3.0 and last["vgs/warmup_active"] == 0.0
    assert [r["vgs/warmup_active"] for r in log.rows] == [1.0, 0.0, 0.0]
    assert last["vgs/scaling_factor"] == vgs.get_scaling_factor()
    assert last["vgs/normalized_variance"] == vgs.get_normalized_variance()
    assert last["vgs/stochastic_var_p90"] == pytest.approx(vgs.get_normalized_variance())
    assert last["vgs/grad_norm_ema"] == vgs._grad_norm_ema  # the EMA, as it is
    assert all(isinstance(v, float) for v in last.values())


def test_a_failing_or_recordless_logger_never_stops_training():
    class Broken:
        def record(self, key, value):
            raise OSError("disk full")
    model = _model()
    vgs = VarianceGradientScaler(model.parameters(), logger=Broken())
    _backward(model, 0)
    with pytest.warns(RuntimeWarning, match="disk full"):
        vgs.step()
    vgs = VarianceGradientScaler(model.parameters(), logger=object())
    vgs.step()
    assert vgs._step_count == 1


def test_a_step_without_logger_never_reads_device_values(monkeypatch):
    """CPU proxy of "no host round trip": every Tensor-to-Python conversion is forbidden."""
    model = _model()
    vgs = VarianceGradientScaler(model.parameters(), warmup_steps=0)
    _backward(model, 0)
    model[0].bias.grad = None  # the partial-gradient path too
    vgs.step()

    def forbidden(*_args, **_kwargs):
        raise AssertionError("host read of a device value during step()")
    for name in ("item", "tolist", "__float__", "__int__", "__bool__", "__index__"):
        monkeypatch.setattr(torch.Tensor, name, forbidden)
    for seed in range(1, 4):
        _backward(model, seed)
        if seed == 2:
            model[2].weight.grad = None
        vgs.step()
    monkeypatch.undo()
    assert vgs._step_count == 4 and vgs.statistics_step_count == 4


@pytest.mark.cuda
def test_cuda_step_is_sync_free():
    model = _model().cuda()
    vgs = VarianceGradientScaler(model.parameters(), warmup_steps=0)
    _backward(model, 0)
    vgs.step()
    with no_cuda_sync():
        for seed in range(1, 4):
            model.zero_grad()
            model(torch.randn(5, 6, device="cuda")).square().mean().backward()
            vgs.step()


def _trained(steps: int = 4, warmup_steps: int = 1,
             logger=None) -> tuple[torch.nn.Module, VarianceGradientScaler]:
    """A model and a VGS that has taken ``steps`` steps on its gradients."""
    model = _model()
    vgs = VarianceGradientScaler(model.parameters(), warmup_steps=warmup_steps, logger=logger)
    for seed in range(steps):
        _backward(model, seed)
        vgs.step()
    return model, vgs


def test_pickling_drops_parameters_and_logger_and_keeps_statistics():
    model, vgs = _trained(logger=Recorder())
    state = vgs.__getstate__()
    assert "_parameters" not in state and "_logger" not in state
    assert all(isinstance(state[k], float) for k in GLOBALS)
    assert state["_step_count"] == 4 and state["_param_grad_mean_ema"].device.type == "cpu"
    back = pickle.loads(pickle.dumps(vgs))
    assert back._parameters is None and back._logger is None
    assert back.scale_gradients() == 1.0  # tracks nothing until relinked
    assert [getattr(back, k) for k in GLOBALS] == [getattr(vgs, k) for k in GLOBALS]
    assert torch.equal(back._param_grad_sq_ema, vgs._param_grad_sq_ema)
    back.update_parameters(model.parameters())
    _backward(model, 5)
    back.step()
    assert back._step_count == 5 and back.statistics_step_count == 1


def _reference_layout(step_count: int, with_stats: bool) -> dict:
    """A reference v3.2 scaler's __getstate__: its attribute names, floats, None or tensors."""
    n = 4
    state = {"enabled": True, "beta": 0.99, "alpha": 0.1, "eps": 1e-8, "warmup_steps": 2,
             "track_per_param": True, "min_scaling_factor": 0.1, "variance_cap": 50.0,
             "_step_count": step_count, "_param_grad_mean_ema": None,
             "_param_grad_sq_ema": None, "_param_numel": None, "_param_ids": {},
             "_grad_mean_ema": 0.02, "_grad_var_ema": 4e-4, "_grad_norm_ema": 0.7,
             "_grad_max_ema": 0.3, "_param_stats": {}}
    if with_stats:
        state.update(_param_grad_mean_ema=torch.tensor([0.01, -0.02, 0.03, 0.001]),
                     _param_grad_sq_ema=torch.tensor([1e-3, 2e-3, 3e-3, 1e-4]),
                     _param_numel=torch.tensor([48.0, 8.0, 24.0, 3.0]))
    assert len(state) == 18 and n == 4
    return state


@pytest.mark.parametrize("with_stats", [True, False])
def test_a_pickle_in_the_reference_layout_unpickles_into_our_class(monkeypatch, with_stats):
    """As in a stable-baselines3 zip: the pickle names the reference's class; the user has
    swapped that name for ours, so unpickling hands the reference's attributes to our class."""
    module = types.ModuleType("variance_gradient_scaler")

    class Written:  # stands in for the reference class when the pickle was written
        def __reduce__(self):
            return (object.__new__, (module.VarianceGradientScaler,), self.state)
    Written.__module__, Written.__qualname__ = module.__name__, "VarianceGradientScaler"
    module.VarianceGradientScaler = Written
    monkeypatch.setitem(sys.modules, module.__name__, module)
    written = Written()
    written.state = _reference_layout(40, with_stats)
    blob = pickle.dumps(written)
    module.VarianceGradientScaler = VarianceGradientScaler  # the user's import swap
    vgs = pickle.loads(blob)
    assert type(vgs) is VarianceGradientScaler and vgs._parameters is None
    assert vgs._step_count == 40 and vgs._grad_norm_ema == 0.7
    assert vgs.statistics_step_count == (40 if with_stats else 0)
    model = _model()
    vgs.update_parameters(model.parameters())  # what the reference trainer does on load
    for seed in range(3):
        _backward(model, seed)
        assert math.isfinite(vgs.scale_gradients())
        vgs.step()
    assert vgs._step_count == 43 and vgs.statistics_step_count == 3
    assert vgs._grad_norm_ema != 0.7


def test_a_pickle_of_this_package_older_layout_still_loads():
    old = {"params": [torch.zeros(2)], "enabled": True, "beta": 0.9, "alpha": 0.2, "eps": 1e-8,
           "warmup_steps": 3, "min_scaling_factor": 0.2, "variance_cap": None,
           "step_count": 12, "statistics_step_count": 5,
           "global_statistics": {"grad_mean_ema": 0.1, "grad_var_ema": None,
                                 "grad_norm_ema": None, "grad_max_ema": None},
           "legacy_statistics": None, "extra_state": {"note": 1},
           "param_grad_mean_ema": torch.zeros(1), "param_grad_sq_ema": torch.ones(1),
           "param_numel": torch.tensor([2.0])}
    vgs = VarianceGradientScaler.__new__(VarianceGradientScaler)
    vgs.__setstate__(old)
    sd = vgs.state_dict()
    assert (sd["step_count"], sd["statistics_step_count"], sd["beta"]) == (12, 5, 0.9)
    assert sd["grad_mean_ema"] == 0.1 and sd["note"] == 1 and vgs._parameters is None
    assert torch.equal(sd["param_grad_sq_ema"], torch.ones(1))


def test_state_dict_of_a_fresh_scaler_is_the_reference_none_layout():
    sd = VarianceGradientScaler(_model().parameters()).state_dict()
    for key in ("param_grad_mean_ema", "param_grad_sq_ema", "param_numel", "grad_mean_ema",
                "grad_var_ema", "grad_norm_ema", "grad_max_ema"):
        assert sd[key] is None, key
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        VarianceGradientScaler(_model().parameters()).load_state_dict(sd)
