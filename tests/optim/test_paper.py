"""The optimizers against the UPGD paper's rule: every row of docs/optimizers.md's "Relation to the
UPGD paper", measured, and the ``update="paper"`` opt-in that reproduces the paper's update.

The paper's rule is :mod:`paper_reference` (written from its formulas). Figures are measured on its
float64 regression problem (seeds 0-4), 20 steps at lr 0.05 unless a test says otherwise.
"""
from __future__ import annotations

import copy

import pytest
import torch

from paper_reference import PaperRule, PaperUPGD, clone, max_difference, problem, run
from upgd_migrate.optim import UPGD, AdaptiveUPGD

SEEDS = range(5)
LR = 0.05


def ours(cls, seed: int, steps: int = 20, **kw) -> list[torch.Tensor]:
    params, set_grads = problem(seed)
    ps = clone(params)
    opt = cls(ps, **{"lr": LR, "sigma": 0.0, **kw})
    return run(ps, set_grads, opt.step, steps)


def papers(seed: int, steps: int = 20, **kw) -> list[torch.Tensor]:
    params, set_grads = problem(seed)
    ps = clone(params)
    return run(ps, set_grads, PaperUPGD(ps, PaperRule(**{"lr": LR, **kw})).step, steps)


def flat(tensors) -> torch.Tensor:
    return torch.cat([t.detach().flatten() for t in tensors])


def one_step_gate(step, params: list[torch.Tensor], rate: float) -> torch.Tensor:
    """The gate ``1 - s`` a step applied, read off the parameters (weight decay 0, no noise)."""
    before, grads = flat(params), flat(p.grad for p in params)
    step()
    return (before - flat(params)) / (rate * grads)


# ---------------------------------------------------------------- the opt-in reproduces the paper


def _noisy_pair(cls, seed: int, ours_kw: dict, rule: PaperRule) -> tuple[list, list]:
    """Ours with ``update="paper"`` and the paper's rule fed the very noise ours drew."""
    params, set_grads = problem(seed)
    mine, drawn = clone(params), []
    opt = cls(mine, sigma=0.01, update="paper", **ours_kw)
    opt.register_noise_hook(lambda p, x, xi: drawn.append(xi.clone()))
    torch.manual_seed(seed)
    run(mine, set_grads, opt.step, 20)
    theirs = clone(params)
    paper = PaperUPGD(theirs, rule)
    n = len(theirs)
    run(theirs, set_grads, lambda: paper.step(drawn[paper.t * n:(paper.t + 1) * n]), 20)
    return mine, theirs


@pytest.mark.parametrize("cls,ours_kw,rule", [
    (UPGD, {"lr": LR}, PaperRule(LR, sigma=0.01)),  # the README's UPGD
    (AdaptiveUPGD, {"lr": LR, "eps": 1e-5}, PaperRule(LR, sigma=0.01, adam=True)),  # the PPO one
    # FirstOrderGlobalUPGD steps lr, not 2*lr: half the rate, twice the decay reproduce it
    (UPGD, {"lr": LR / 2, "weight_decay": 0.002}, PaperRule(LR, sigma=0.01, factor=1.0)),
], ids=["README-UPGD", "PPO-AdaptiveUPGD", "FirstOrderGlobalUPGD"])
@pytest.mark.parametrize("seed", [0, 3])
def test_paper_update_agrees_with_the_papers_rule_to_1e_12(cls, ours_kw, rule, seed):
    mine, theirs = _noisy_pair(cls, seed, ours_kw, rule)
    assert max_difference(mine, theirs) < 1e-12
    assert max_difference(mine, problem(seed)[0]) > 0.1  # it moved: the agreement means something


def test_default_update_is_unchanged():
    """Checksums of 20 noisy steps, computed before ``update`` existed, on both CPU paths."""
    pinned = {(UPGD, False): 0.8301340951723059, (UPGD, None): 0.8301340951723054,
              (AdaptiveUPGD, False): 3.2779845169789685, (AdaptiveUPGD, None): 3.277984516978971}
    for (cls, foreach), checksum in pinned.items():
        for kw in ({}, {"update": "reference"}):
            torch.manual_seed(7)
            got = float(flat(ours(cls, 0, sigma=0.01, foreach=foreach, **kw)).sum())
            assert got == pytest.approx(checksum, abs=1e-12)


# ---------------------------------------------------------------- the rows, measured


def test_twenty_step_differences():
    upgd = [max_difference(ours(UPGD, s), papers(s, factor=1.0)) for s in SEEDS]
    adaptive = [max_difference(ours(AdaptiveUPGD, s), papers(s, adam=True)) for s in SEEDS]
    assert (min(upgd), max(upgd)) == pytest.approx((0.130, 0.211), abs=1e-3)
    assert (min(adaptive), max(adaptive)) == pytest.approx((0.855, 1.195), abs=1e-3)


def _first_gates(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Step 1's gates at beta_utility 0.999, weight decay 0: ours, the paper's, the opt-in's."""
    params, set_grads = problem(seed)
    gates = []
    for make, rate in ((lambda ps: UPGD(ps, lr=LR, sigma=0.0, weight_decay=0.0).step, LR),
                       (lambda ps: PaperUPGD(ps, PaperRule(LR, weight_decay=0.0)).step, 2 * LR),
                       (lambda ps: UPGD(ps, lr=LR, sigma=0.0, weight_decay=0.0,
                                        update="paper").step, 2 * LR)):
        ps = clone(params)
        set_grads(ps)
        gates.append(one_step_gate(make(ps), ps, rate))
    return tuple(gates)


def test_gate_range_and_saturation_at_step_one():
    saturated = []
    for seed in SEEDS:
        mine, paper, opt_in = _first_gates(seed)
        assert mine.min() == pytest.approx(0.2689414, abs=1e-6)  # 1 - sigmoid(1)
        assert mine.max() == pytest.approx(0.7310586, abs=1e-6)  # 1 - sigmoid(-1)
        assert paper.min() == pytest.approx(0.0, abs=1e-9)  # s = 1: frozen
        assert paper.max() == pytest.approx(1.0, abs=1e-9)  # s = 0: unprotected
        s = 1.0 - paper
        saturated.append(int(((s < 0.01) | (s > 0.99)).sum()))
        assert torch.allclose(opt_in, paper, rtol=0, atol=1e-12)
    assert saturated == [116, 117, 113, 90, 114]  # of 129 entries: 70% to 91%


def test_most_useful_weight_is_frozen_for_the_first_27_steps():
    """The paper divides û by the largest raw trace, so the most useful weight's s is
    sigmoid(1/(1-0.999**t)): exactly 1 in float64 (gate 0) until step 28, and its update stays
    below one ulp of the weight for a few steps more."""
    params, set_grads = problem(0)
    theirs, mine = clone(params), clone(params)
    paper = PaperUPGD(theirs, PaperRule(LR, weight_decay=0.0))
    opt = UPGD(mine, lr=LR, sigma=0.0, weight_decay=0.0, update="paper")
    gate_zero, unmoved = [], []
    for _ in range(40):
        set_grads(theirs)
        paper.step()
        gate_zero.append(bool(flat(paper.last_s).max() == 1.0))
        set_grads(mine)
        before = flat(mine)
        opt.step()
        top = flat(opt.state[p]["avg_utility"] for p in mine).argmax()
        unmoved.append(bool(flat(mine)[top] == before[top]))
    assert gate_zero == [True] * 27 + [False] * 13
    assert unmoved == [True] * 32 + [False] * 8


@pytest.mark.parametrize("update", ["reference", "paper"])
def test_utility_scope_is_every_group_in_both(update):
    """A second group with a more useful weight changes the first group's gate: both rules
    take their utility range over every tensor of every group."""
    gates = []
    for second in (0.0, 5.0):
        w = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64, requires_grad=True)
        v = torch.tensor([second], dtype=torch.float64, requires_grad=True)
        w.grad, v.grad = -w.detach() * 0.1, -v.detach()
        opt = UPGD([{"params": [w]}, {"params": [v]}], lr=LR, sigma=0.0, weight_decay=0.0,
                   beta_utility=0.0, update=update)
        gates.append(one_step_gate(opt.step, [w], LR * (2 if update == "paper" else 1)))
    assert (gates[0] - gates[1]).abs().min() > 0.02


def _one_step(params: list[torch.Tensor], grads: list[torch.Tensor], make, rate: float):
    for p, g in zip(params, grads):
        p.grad = g.clone()
    return one_step_gate(make(params).step, params, rate)


def test_all_utilities_zero():
    """Zero-initialised weights: every utility 0 at step 1. The paper's step is NaN in every
    entry; the opt-in defines 0/0 as 0 (gate 1/2)."""
    params, set_grads = problem(0)
    zero = [torch.zeros_like(p).requires_grad_() for p in params]
    set_grads(zero)
    assert float(zero[3].grad.abs().sum()) > 0  # only the output bias has a gradient
    paper = PaperUPGD(zero, PaperRule(LR))
    paper.step()
    assert all(bool(p.isnan().all()) for p in zero)  # 129 of 129 entries
    for update, expect in (("reference", 0.73105858), ("paper", 0.5)):
        ps = [torch.zeros_like(p).requires_grad_() for p in params]
        set_grads(ps)
        opt = UPGD(ps, lr=LR, sigma=0.0, weight_decay=0.0, update=update)
        gate = one_step_gate(opt.step, ps, LR * (2 if update == "paper" else 1))
        assert all(bool(p.isfinite().all()) for p in ps)
        assert gate[-1] == pytest.approx(expect, abs=1e-8)


def test_all_utilities_negative():
    """g = p: every utility -p² < 0, the weight at 0.5 the most useful, at 1 the least."""
    p = torch.linspace(0.5, 1.0, 6, dtype=torch.float64)
    grads = [p.clone()]

    def fresh():
        return [p.clone().requires_grad_()]
    kw = {"lr": 0.1, "sigma": 0.0, "weight_decay": 0.0, "beta_utility": 0.0}
    paper = _one_step(fresh(), grads, lambda ps: PaperUPGD(ps, PaperRule(0.1, weight_decay=0.0,
                                                                           beta_utility=0.0)), 0.2)
    fixed = _one_step(fresh(), grads, lambda ps: UPGD(ps, update="paper", **kw), 0.2)
    mine = _one_step(fresh(), grads, lambda ps: UPGD(ps, **kw), 0.1)
    # the gate (1 - s) from the most useful weight to the least
    assert paper[[0, -1]].tolist() == pytest.approx([0.2689, 0.0180], abs=1e-4)  # reversed
    assert fixed[[0, -1]].tolist() == pytest.approx([0.7311, 0.9820], abs=1e-4)  # order kept
    assert mine[[0, -1]].tolist() == pytest.approx([0.2689, 0.7311], abs=1e-4)
    assert bool((paper.diff() < 0).all()) and bool((fixed.diff() > 0).all())
    assert bool((mine.diff() > 0).all())


def test_step_factor_two_doubles_update_and_noise():
    """The opt-in's first step against FirstOrderGlobalUPGD's (factor 1), the same noise draw."""
    params, set_grads = problem(0)
    moves = {}
    for sigma in (0.0, 0.1):
        mine, drawn = clone(params), []
        opt = UPGD(mine, lr=LR, sigma=sigma, weight_decay=0.0, update="paper")
        opt.register_noise_hook(lambda p, x, xi: drawn.append(xi.clone()))
        set_grads(mine)
        torch.manual_seed(0)
        opt.step()
        theirs = clone(params)
        set_grads(theirs)
        PaperUPGD(theirs, PaperRule(LR, weight_decay=0.0, factor=1.0)).step(drawn or None)
        moves[sigma] = (flat(mine) - flat(params), flat(theirs) - flat(params))
    gradient_part = moves[0.0]
    noise_part = (moves[0.1][0] - moves[0.0][0], moves[0.1][1] - moves[0.0][1])
    for mine, theirs in (gradient_part, noise_part):
        moved = theirs.abs() > 1e-9  # entries whose gate is (nearly) 0 move in neither
        assert int(moved.sum()) > 50
        assert float((mine[moved] / theirs[moved] - 2.0).abs().max()) < 1e-6


def test_eps_default_and_its_effect():
    import inspect
    assert inspect.signature(AdaptiveUPGD).parameters["eps"].default == 1e-8
    assert PaperRule(LR).eps == 1e-5  # the paper's AdaptiveUPGD default
    effect = [max_difference(ours(AdaptiveUPGD, s, update="paper"), papers(s, adam=True))
              for s in SEEDS]
    assert (min(effect), max(effect)) == pytest.approx((0.00157, 0.0537), abs=1e-4)


# ---------------------------------------------------------------- the opt-in as an option


def _stepped(update: str = "paper", **kw):
    params, set_grads = problem(1)
    opt = AdaptiveUPGD(params, lr=LR, update=update, **kw)
    run(params, set_grads, opt.step, 2)
    return opt, params, set_grads


def test_update_survives_state_dict_and_default_states_keep_their_layout():
    import pickle
    opt, params, set_grads = _stepped()
    saved = opt.state_dict()
    assert saved["param_groups"][0]["update"] == "paper"
    fresh = AdaptiveUPGD(params, lr=LR)
    fresh.load_state_dict(saved)
    assert fresh.param_groups[0]["update"] == "paper" and "update" not in fresh.defaults
    assert pickle.loads(pickle.dumps(opt)).param_groups[0]["update"] == "paper"
    # A default optimizer writes no key: its groups and states have the layout of the versions
    # before the option, which (like a state written by them) load and run the reference rule.
    default, _, _ = _stepped(update="reference")
    assert "update" not in default.defaults and "update" not in default.param_groups[0]
    older = default.state_dict()
    assert "update" not in older["param_groups"][0]
    twins = clone(params)
    back, twin = AdaptiveUPGD(params, lr=LR, update="paper"), AdaptiveUPGD(twins, lr=LR)
    for opt, ps in ((back, params), (twin, twins)):
        opt.load_state_dict(copy.deepcopy(older))  # load_state_dict shares the tensors
        set_grads(ps)
        torch.manual_seed(0)
        opt.step()
    # the saved groups win, as for every option: the reference rule ran
    assert "update" not in back.param_groups[0] and max_difference(params, twins) == 0.0


def test_unusable_update_settings_are_refused_before_any_state_moves():
    with pytest.raises(ValueError, match="Invalid update value: papers"):
        UPGD(problem(0)[0], update="papers")
    with pytest.raises(ValueError, match="runs the single-tensor implementation"):
        AdaptiveUPGD(problem(0)[0], update="paper", foreach=True)
    opt, params, set_grads = _stepped()
    steps = [int(s["step"]) for s in opt.state.values()]
    for group_edit, message in (({"foreach": True}, "single-tensor"),
                                ({"update": "other"}, "Invalid update value")):
        opt.param_groups[0].update(group_edit)
        set_grads(params)
        with pytest.raises(ValueError, match=message):
            opt.step()
        opt.param_groups[0].update(foreach=None, update="paper")
    ps, set_grads = problem(0)
    mixed = UPGD([{"params": ps[:2]}, {"params": ps[2:], "update": "reference"}],
                 update="paper")
    set_grads(ps)
    with pytest.raises(ValueError, match=r"across param groups .*\['paper', 'reference'\]"):
        mixed.step()
    assert [int(s["step"]) for s in opt.state.values()] == steps and not mixed.state


def test_paper_update_runs_the_single_tensor_path_under_a_monitor(monkeypatch):
    """foreach=None picks the single-tensor step for the paper's rule; an observer still runs."""
    from upgd_migrate.optim import _multi_tensor, _two_lane
    for name, module in (("param_update", _multi_tensor), ("step", _two_lane)):
        monkeypatch.setattr(module, name, lambda *a, **k: pytest.fail("a fast path ran"))
    opt, params, set_grads = _stepped(sigma=0.05, adaptive_noise=True)
    rows = []
    opt.observe_next_step(lambda batch, row: rows.append(row))
    set_grads(params)
    opt.step()
    assert len(rows) == 1 and all(p.isfinite().all() for p in params)
