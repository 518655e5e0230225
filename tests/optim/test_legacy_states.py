"""Every legacy generation loads through load_state_dict and through unpickling, keeps its
tensors bit-identical until the first step, and then steps to finite values."""
from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
from optim_helpers import FIXTURES, group_params, params_for, set_random_grads

from upgd_migrate.optim import FORMAT_KEY, FORMAT_VERSION, UPGD, UPGDW, AdaptiveUPGD

CASES = [
    ("adaptive_upgd_g0.pt", AdaptiveUPGD),
    ("adaptive_upgd_g1.pt", AdaptiveUPGD),
    ("adaptive_upgd_g1_ema.pt", AdaptiveUPGD),
    ("adaptive_upgd_g2.pt", AdaptiveUPGD),
    ("adaptive_upgd_g2_two_groups.pt", AdaptiveUPGD),
    ("upgd.pt", UPGD),
    ("upgdw.pt", UPGDW),
]
TRAINER_KEYS = ("initial_lr", "_kl_base_lr", "_lr_scale", "max_lr", "min_lr", "param_names")


def _load(name: str) -> dict:
    return torch.load(FIXTURES / "optim" / name, weights_only=True)


def _assert_legacy_kept(saved: dict, opt) -> None:
    params = [p for g in opt.param_groups for p in g["params"]]
    for pid, entry in saved["state"].items():
        live = opt.state[params[pid]]
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                assert live[key].dtype == value.dtype
                assert torch.equal(live[key], value), key
            else:
                assert live[key] == value and type(live[key]) is type(value), key
    for saved_group, group in zip(saved["param_groups"], opt.param_groups):
        for key, value in saved_group.items():
            if key != "params":
                assert group[key] == value, key


def _step_finite(opt, params, steps: int = 3) -> None:
    gen = torch.Generator().manual_seed(7)
    for _ in range(steps):
        set_random_grads(params, gen)
        opt.step()
    for p in params:
        assert torch.isfinite(p).all()
        for value in opt.state[p].values():
            if isinstance(value, torch.Tensor):
                assert torch.isfinite(value).all()


@pytest.mark.parametrize("name,cls", CASES)
def test_load_state_dict_keeps_legacy_then_steps(name, cls):
    saved = _load(name)
    params = params_for(saved)
    opt = cls(group_params(saved, params))
    opt.load_state_dict(copy.deepcopy(saved))
    _assert_legacy_kept(saved, opt)
    for group in opt.param_groups:
        assert group[FORMAT_KEY] == FORMAT_VERSION
        if cls is not UPGDW:
            assert {"adaptive_noise", "noise_beta", "min_noise_std", "instant_noise_scale"} <= set(group)
    _step_finite(opt, params)
    assert all(opt.state[p]["step"] == 1203 for p in params)


def _legacy_object(cls, saved: dict, params: list):
    """An optimizer object as an older generation held it: only the saved keys, no new ones."""
    obj = cls.__new__(cls)
    groups = []
    for g in copy.deepcopy(saved["param_groups"]):
        g["params"] = [params[i] for i in g["params"]]
        groups.append(g)
    defaults = {k: v for k, v in groups[0].items() if k not in ("params",) + TRAINER_KEYS}
    state = {params[i]: copy.deepcopy(v) for i, v in saved["state"].items()}
    obj.__dict__.update(defaults=defaults, state=state, param_groups=groups)
    return obj


@pytest.mark.parametrize("name,cls", CASES)
def test_unpickling_an_older_generation(name, cls):
    saved = _load(name)
    params = params_for(saved)
    blob = pickle.dumps(_legacy_object(cls, saved, params))
    opt = pickle.loads(blob)
    params = [p for g in opt.param_groups for p in g["params"]]
    _assert_legacy_kept(saved, opt)
    assert opt.defaults[FORMAT_KEY] == FORMAT_VERSION
    _step_finite(opt, params)


def test_trainer_keys_survive_load_step_and_save():
    saved = _load("adaptive_upgd_g2_two_groups.pt")
    params = params_for(saved)
    opt = AdaptiveUPGD(group_params(saved, params))
    opt.load_state_dict(copy.deepcopy(saved))
    _step_finite(opt, params, steps=1)
    again = opt.state_dict()
    for old, new in zip(saved["param_groups"], again["param_groups"]):
        assert {k: old[k] for k in TRAINER_KEYS} == {k: new[k] for k in TRAINER_KEYS}
        assert new[FORMAT_KEY] == FORMAT_VERSION
    assert again["param_groups"][1]["lr"] == 2e-4


def test_python_int_step_and_float_grad_norm_ema_are_accepted():
    saved = _load("adaptive_upgd_g1_ema.pt")
    params = params_for(saved)
    opt = AdaptiveUPGD(params)
    opt.load_state_dict(copy.deepcopy(saved))
    _step_finite(opt, params, steps=2)
    first = opt.state[params[0]]
    assert first["step"] == 1202 and type(first["step"]) is int
    # The reference EMA measured an L2 norm from a 1.0 start; it is kept, never reused.
    assert first["grad_norm_ema"] == 4.7
    # G1 had no instant_noise_scale: it is filled with the constructor default (instant path).
    assert opt.param_groups[0]["instant_noise_scale"] is True
    assert "noise_scale_ema" not in first


def test_own_state_dict_round_trips_with_weights_only():
    params = [torch.nn.Parameter(torch.randn(4, 3)) for _ in range(2)]
    opt = AdaptiveUPGD(params, adaptive_noise=True, instant_noise_scale=False, sigma=0.05)
    _step_finite(opt, params, steps=2)
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)
    assert loaded["param_groups"][0][FORMAT_KEY] == FORMAT_VERSION
    clone = AdaptiveUPGD([torch.nn.Parameter(p.detach().clone()) for p in params])
    clone.load_state_dict(loaded)
    assert clone.param_groups[0]["adaptive_noise"] is True
    assert torch.equal(clone.state[clone.param_groups[0]["params"][0]]["noise_scale_ema"],
                       opt.state[params[0]]["noise_scale_ema"])
