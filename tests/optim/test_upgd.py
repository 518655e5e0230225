"""Behaviour of UPGD, AdaptiveUPGD and UPGDW: validation, the update rule, edge cases."""
from __future__ import annotations

import pytest
import torch
from optim_helpers import SCHEDULES, use_schedule

from upgd_migrate.optim import UPGD, UPGDW, AdaptiveUPGD

GATE_ALL_EQUAL = 1.0 - torch.sigmoid(torch.tensor(-1.0)).item()  # n = 0 everywhere


@pytest.mark.parametrize("kwargs,message", [
    ({"lr": -1.0}, "Invalid learning rate: -1.0"),
    ({"sigma": -1.0}, "Invalid sigma value: -1.0"),
    ({"weight_decay": -0.1}, "Invalid weight_decay value: -0.1"),
    ({"beta_utility": 1.0}, "Invalid beta_utility parameter: 1.0"),
    ({"beta1": -0.1}, "Invalid beta1 parameter: -0.1"),
    ({"beta2": 1.5}, "Invalid beta2 parameter: 1.5"),
    ({"eps": -1e-8}, "Invalid eps value: -1e-08"),
    ({"noise_beta": 1.0}, "Invalid noise_beta parameter: 1.0"),
    ({"min_noise_std": -1.0}, "Invalid min_noise_std value: -1.0"),
])
def test_adaptive_upgd_validation(kwargs, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        AdaptiveUPGD([torch.nn.Parameter(torch.zeros(2))], **kwargs)


def test_upgd_and_upgdw_validation():
    p = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(ValueError, match="^Invalid sigma value: -1.0$"):
        UPGD(p, sigma=-1.0)
    with pytest.raises(ValueError, match=r"^Invalid beta parameter at index 1: 1.0$"):
        UPGDW(p, betas=(0.9, 1.0))
    with pytest.raises(ValueError, match=r"^Invalid epsilon value: -1.0$"):  # UPGDW's wording
        UPGDW(p, eps=-1.0)
    with pytest.raises(ValueError, match=r"^Invalid noise_beta parameter: 1.0$"):
        UPGD(p, noise_beta=1.0)
    # The reference raises NotImplementedError here, and callers catch that type.
    with pytest.raises(NotImplementedError, match="does not support amsgrad"):
        UPGDW(p, amsgrad=True)


def test_reference_defaults():
    p = [torch.nn.Parameter(torch.zeros(2))]
    g = AdaptiveUPGD(p).defaults
    assert (g["lr"], g["weight_decay"], g["beta_utility"], g["sigma"]) == (1e-5, 0.001, 0.999, 0.001)
    assert (g["beta1"], g["beta2"], g["eps"]) == (0.9, 0.999, 1e-8)
    assert (g["adaptive_noise"], g["noise_beta"], g["min_noise_std"], g["instant_noise_scale"]) == (
        False, 0.999, 1e-6, True)
    w = UPGDW(p).defaults
    assert (w["lr"], w["betas"], w["eps"], w["weight_decay"], w["sigma"], w["amsgrad"]) == (
        1e-4, (0.9, 0.999), 1e-8, 0.01, 0.001, False)
    assert UPGD(p).defaults["lr"] == 1e-5


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_sigma_zero_equal_utilities_is_gated_adamw(schedule, monkeypatch):
    """Every element starts equal and gets the same gradient, so every utility -g*p is equal
    (exactly, not up to rounding: the range normaliser's 1e-8 would amplify rounding). The gate
    is then the constant 1 - sigmoid(-1) and the update is AdamW's times that gate."""
    # Sizes that are whole multiples of the CPU vector width, so no element takes a scalar
    # tail path that rounds differently.
    init = [torch.full((4, 16), 0.7), torch.full((64,), 0.7)]
    ours = [torch.nn.Parameter(t.clone()) for t in init]
    ref = [torch.nn.Parameter(t.clone()) for t in init]
    lr, wd = 1e-2, 0.01
    foreach, ran = use_schedule(schedule, monkeypatch)
    opt = AdaptiveUPGD(ours, lr=lr, weight_decay=wd, sigma=0.0, foreach=foreach)
    adamw = torch.optim.AdamW(ref, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=wd)
    gen = torch.Generator().manual_seed(1)
    moved = 0.0
    for _ in range(50):
        c = torch.randn((), generator=gen).item()
        before_ours = [p.detach().clone() for p in ours]
        before_ref = [p.detach().clone() for p in ref]
        for p, q in zip(ours, ref):
            p.grad = torch.full_like(p, c)
            q.grad = torch.full_like(q, c)
        opt.step()
        adamw.step()
        for p, q, b, bq in zip(ours, ref, before_ours, before_ref):
            ours_update = p.detach() - b * (1 - lr * wd)
            ref_update = q.detach() - bq * (1 - lr * wd)
            moved += float(ref_update.abs().max())
            torch.testing.assert_close(ours_update, GATE_ALL_EQUAL * ref_update, rtol=0, atol=1e-6)
    assert moved > 50 * 2 * 1e-4  # AdamW moved the weights: the comparison is not vacuous
    assert ran["two-lane"] == (50 if schedule == "two-lane" else 0)


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("cls", [AdaptiveUPGD, UPGD, UPGDW])
@pytest.mark.parametrize("utility_case", ["zero", "equal", "negative"])
def test_degenerate_utilities_and_zero_gradients_stay_finite(cls, utility_case, schedule,
                                                             monkeypatch):
    p = torch.nn.Parameter(torch.full((3, 3), 2.0) if utility_case != "zero" else torch.zeros(3, 3))
    foreach, _ = use_schedule(schedule, monkeypatch)
    opt = cls([p], lr=0.1, foreach=foreach)
    for _ in range(5):
        if utility_case == "zero":
            p.grad = torch.zeros_like(p)
        elif utility_case == "equal":
            p.grad = torch.ones_like(p)  # -g*p equal everywhere
        else:
            p.grad = torch.rand_like(p) + 1.0  # -g*p < 0 everywhere
        opt.step()
        assert torch.isfinite(p).all()
        assert torch.isfinite(opt.state[p]["avg_utility"]).all()


def test_params_without_grad_are_skipped_and_closure_loss_returned():
    a, b = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
    opt = AdaptiveUPGD([a, b], lr=0.1)

    def closure():
        opt.zero_grad()
        loss = (a * 2).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert loss.item() == 6.0
    assert not torch.equal(a.detach(), torch.ones(3))
    assert torch.equal(b.detach(), torch.ones(3)) and b not in opt.state


def test_sparse_gradients_refused_before_any_state_moves():
    dense = torch.nn.Parameter(torch.ones(3))
    emb = torch.nn.Embedding(10, 3, sparse=True)
    opt = UPGD([dense, *emb.parameters()])
    dense.grad = torch.ones(3)
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="^UPGD does not support sparse gradients$"):
        opt.step()
    assert not opt.state and torch.equal(dense.detach(), torch.ones(3))


def test_state_dict_carries_format_stamp():
    opt = UPGD([torch.nn.Parameter(torch.zeros(2))])
    assert opt.state_dict()["param_groups"][0]["upgd_migrate_format"] == 1


def test_utility_range_is_taken_over_bias_corrected_utility():
    """At t=1 the raw trace is (1-b_u)*(-g*p): normalising û by the range of raw u would push
    every entry to the clamp. With the right range the gates span the full interval."""
    p = torch.nn.Parameter(torch.linspace(-1.0, 1.0, 101))
    opt = UPGD([p], lr=1.0, weight_decay=0.0, sigma=0.0)
    p.grad = torch.ones_like(p)
    before = p.detach().clone()
    opt.step()
    gate = (before - p.detach())  # lr=1, g=1: the update is exactly the gate
    lo, hi = 1 - torch.sigmoid(torch.tensor(1.0)), 1 - torch.sigmoid(torch.tensor(-1.0))
    torch.testing.assert_close(gate.min(), lo, atol=1e-6, rtol=0)
    torch.testing.assert_close(gate.max(), hi, atol=1e-6, rtol=0)
    assert ((gate > lo + 1e-3) & (gate < hi - 1e-3)).float().mean() > 0.9
