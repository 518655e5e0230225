from __future__ import annotations

import io
import math
import warnings

import pytest
import torch

from upgd_migrate.optim.vgs import LEGACY_KEY
from upgd_migrate.optim.vgs import LegacyVGSStateWarning
from upgd_migrate.optim.vgs import VarianceGradientScaler

SIZES = (7, 400, 3, 1000)
# Per-tensor gradient mean and noise std: nv ~ (std/mean)^2 is about 0.25, 16, 1 and 25, so the
# 90th percentile (~20) lies below the default cap of 50 and above a cap of 10.
MEANS = (1.0, 0.5, 1.0, 0.4)
STDS = (0.5, 2.0, 1.0, 2.0)


def _params() -> list[torch.Tensor]:
    return [torch.nn.Parameter(torch.zeros(n)) for n in SIZES]


def _grads(gen: torch.Generator, step: int) -> list[torch.Tensor | None]:
    """Tensors with different signal-to-noise ratios; tensor 1 has no gradient on odd steps."""
    grads = []
    for n, mean, std in zip(SIZES, MEANS, STDS):
        noise = torch.randn(n, generator=gen, dtype=torch.float64)
        grads.append((mean + std * noise).float())
    if step % 2:
        grads[1] = None
    return grads


def _quantile(values: list[float], q: float) -> float:
    """The linear-interpolation quantile, written out."""
    a = sorted(values)
    pos = q * (len(a) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return a[lo] + (a[hi] - a[lo]) * (pos - lo)


class Reference:
    """docs/optimizers.md re-computed in float64 with plain loops, independent of the module."""

    def __init__(self, n, beta=0.99, alpha=0.1, eps=1e-8, warmup_steps=100,
                 min_scaling_factor=0.1, variance_cap=50.0):
        self.m, self.s = [0.0] * n, [0.0] * n
        self.beta, self.alpha, self.eps, self.warmup = beta, alpha, eps, warmup_steps
        self.msf, self.cap, self.t = min_scaling_factor, variance_cap, 0

    def step(self, grads):
        self.t += 1
        for i, g in enumerate(grads):
            if g is not None:
                g = [float(x) for x in g.double()]
                mu, sq = sum(g) / len(g), sum(x * x for x in g) / len(g)
                self.m[i] = self.beta * self.m[i] + (1 - self.beta) * mu
                self.s[i] = self.beta * self.s[i] + (1 - self.beta) * sq

    def factor(self):
        if self.t < self.warmup or self.t == 0:
            return 1.0
        bc, nvs = 1 - self.beta ** self.t, []
        for m, s in zip(self.m, self.s):  # a tensor without statistics yet counts as nv = 0
            mh, sh = m / bc, s / bc
            nv = max(sh - mh * mh, 0.0) / (max(mh * mh, 1e-12) + self.eps)
            nvs.append(nv if math.isfinite(nv) else 0.0)
        nv = min(max(_quantile(nvs, 0.9), 0.0), 1e6) if nvs else 0.0
        if self.cap is not None:
            nv = min(nv, self.cap)
        return min(max(1 / (1 + self.alpha * nv), self.msf), 1.0)


def _train(kwargs, steps=8, grads_fn=_grads):
    """Run the reference call order against both implementations; return both factor series."""
    params, gen = _params(), torch.Generator().manual_seed(0)
    vgs, ref = VarianceGradientScaler(params, **kwargs), Reference(len(params), **kwargs)
    got, want = [], []
    for step in range(steps):
        for p, g in zip(params, grads_fn(gen, step)):
            p.grad = g
        want.append(ref.factor())
        got.append(vgs.scale_gradients())
        ref.step([p.grad for p in params])
        vgs.step()
    return got, want


@pytest.mark.parametrize(("kwargs", "pinned"), [
    ({"warmup_steps": 3}, None),
    ({"warmup_steps": 3, "variance_cap": None}, None),
    ({"warmup_steps": 0, "beta": 0.9, "eps": 1e-3}, None),
    ({"warmup_steps": 2, "variance_cap": 10.0}, 1 / (1 + 0.1 * 10.0)),
    ({"warmup_steps": 2, "alpha": 5.0, "min_scaling_factor": 0.25}, 0.25),
])
def test_factor_matches_reference(kwargs, pinned):
    got, want = _train(kwargs)
    assert got == pytest.approx(want, rel=1e-5, abs=1e-9)
    # Step 0 has no statistics yet, so c is 1 there even without warmup.
    warm = max(kwargs["warmup_steps"], 1)
    assert got[:warm] == [1.0] * warm
    if pinned is None:  # the factor is free and moves with the statistics
        assert all(0.1 < c < 1.0 for c in got[warm:]) and len(set(got[warm:])) > 2
    else:  # the cap or the clamp binds
        assert got[warm:] == pytest.approx([pinned] * (len(got) - warm), abs=1e-12)


def test_no_cap_scales_harder_than_the_cap():
    capped, _ = _train({"warmup_steps": 1, "variance_cap": 10.0})
    uncapped, _ = _train({"warmup_steps": 1, "variance_cap": None})
    assert all(u < c for u, c in zip(uncapped[1:], capped[1:]))


def test_zero_gradients_give_unit_factor():
    def zeros(gen, step):
        return [torch.zeros(n) for n in SIZES]
    got, want = _train({"warmup_steps": 0}, grads_fn=zeros)
    assert got == want == [1.0] * 8


def test_zero_mean_gradient_hits_the_clip():
    """mean(g) = 0 with variance: the 1e-12 floor keeps nv finite (1e12), then it is clipped."""
    def grads(gen, step):
        return [torch.tensor([1.0, -1.0] * (n // 2) + [0.0] * (n % 2)) for n in SIZES]
    kwargs = {"warmup_steps": 1, "eps": 1e-12, "alpha": 1.0, "min_scaling_factor": 1e-9,
              "variance_cap": None}
    got, want = _train(kwargs, steps=2, grads_fn=grads)
    assert got == want == [1.0, 1 / (1 + 1e6)]


@pytest.mark.parametrize("missing", ["zeros", "none"])
def test_a_tensor_without_statistics_counts_as_zero_in_the_percentile(missing):
    """As the reference: its nv is 0 and it stays in the 90th percentile. A 0 at the bottom
    shifts every other rank up, so the interpolated percentile moves towards the largest nv."""
    def grads(gen, step):
        out = _grads(gen, 0)
        out[0] = torch.zeros(SIZES[0]) if missing == "zeros" else None
        return out
    got, want = _train({"warmup_steps": 1, "variance_cap": None}, grads_fn=grads)
    assert got == pytest.approx(want, rel=1e-5)
    nvs_left_out = Reference(len(SIZES) - 1, warmup_steps=1, variance_cap=None)
    gen = torch.Generator().manual_seed(0)
    for step in range(8):
        nvs_left_out.step(grads(gen, step)[1:])
    assert got[-1] < nvs_left_out.factor()  # here leaving it out would scale less


@pytest.mark.parametrize("bad", [math.inf, math.nan])
def test_non_finite_gradient_counts_as_zero_variance(bad):
    def grads(gen, step):
        out = _grads(gen, 0)
        out[3][0] = bad
        return out
    got, want = _train({"warmup_steps": 1, "variance_cap": None}, grads_fn=grads)
    assert all(math.isfinite(c) and 0.1 <= c <= 1.0 for c in got)
    assert got == pytest.approx(want, rel=1e-5)


def test_scale_gradients_multiplies_every_grad_by_the_same_factor():
    params, gen = _params(), torch.Generator().manual_seed(1)
    vgs = VarianceGradientScaler(params, warmup_steps=1)
    for p, g in zip(params, _grads(gen, 0)):
        p.grad = g
    vgs.step()
    params[2].grad = None
    before = [None if p.grad is None else p.grad.clone() for p in params]
    c = vgs.scale_gradients()
    assert 0.1 <= c < 1.0 and c == vgs.get_scaling_factor()
    for p, old in zip(params, before):
        assert (p.grad is None) if old is None else torch.equal(p.grad, old * c)


def test_step_skips_params_without_grad():
    params = _params()
    vgs = VarianceGradientScaler(params)
    for p in params:
        p.grad = torch.ones_like(p)
    params[0].grad.neg_()
    vgs.step()
    params[1].grad = None
    vgs.step()
    assert vgs.step_count == 2 and params[1].grad is None
    assert vgs.param_grad_mean_ema.tolist() == pytest.approx([-0.0199, 0.01, 0.0199, 0.0199])
    assert vgs.param_grad_sq_ema.tolist() == pytest.approx([0.0199, 0.01, 0.0199, 0.0199])


def test_disabled_scaler_never_scales_but_counts():
    params, gen = _params(), torch.Generator().manual_seed(2)
    vgs = VarianceGradientScaler(params, enabled=False, warmup_steps=0)
    for step in range(3):
        for p, g in zip(params, _grads(gen, step)):
            p.grad = g
        before = [None if p.grad is None else p.grad.clone() for p in params]
        assert vgs.scale_gradients() == 1.0
        assert all(b is None or torch.equal(p.grad, b) for p, b in zip(params, before))
        vgs.step()
    assert vgs.step_count == 3
    vgs.enabled = True
    assert vgs.get_scaling_factor() < 1.0


def test_param_groups_are_accepted_in_order():
    a, b, c = (torch.nn.Parameter(torch.zeros(n)) for n in (2, 3, 4))
    vgs = VarianceGradientScaler([{"params": [a, b]}, {"params": c, "lr": 1.0}])
    assert vgs._parameters == vgs.params == [a, b, c]
    assert vgs.param_numel is None  # no statistics yet
    vgs.update_statistics()
    assert vgs._param_numel.tolist() == [2.0, 3.0, 4.0]


def test_empty_parameter_list_tracks_nothing_and_duplicates_are_refused():
    vgs = VarianceGradientScaler([], warmup_steps=0)
    vgs.step()
    assert vgs.scale_gradients() == 1.0 and vgs.state_dict()["param_numel"] is None
    p = torch.nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match="more than once"):
        VarianceGradientScaler([p, p])


def test_sparse_gradients_are_refused():
    p = torch.nn.Parameter(torch.zeros(3))
    p.grad = torch.zeros(3).to_sparse()
    with pytest.raises(RuntimeError, match="sparse"):
        VarianceGradientScaler([p]).step()


# --- state_dict / load_state_dict over every legacy layout (docs/checkpoints.md) ---

STEP_COUNT = 250
V1_GLOBALS = {"grad_mean_ema": 0.0123, "grad_var_ema": 0.0045, "grad_norm_ema": 1.7,
              "grad_max_ema": 3.2}


def _legacy_state(version: str | None, n: int = len(SIZES)) -> dict:
    """A state as the given reference version saved it, with non-default hyperparameters."""
    sd = {"enabled": True, "beta": 0.95, "alpha": 0.3, "eps": 1e-6, "warmup_steps": 20,
          "step_count": STEP_COUNT, **V1_GLOBALS}
    if version is None:
        return sd
    gen = torch.Generator().manual_seed(3)
    mean = torch.randn(n, generator=gen) * 0.01
    second = torch.rand(n, generator=gen) * 1e-3  # 2.0: Var(g); 3.0: mean^2; 3.x: mean(g^2)
    if version == "2.0":
        mean = mean.abs()  # E|g|
    elif version == "3.0":
        second = mean.square() * 0.9
    sd.update(param_grad_mean_ema=mean, param_grad_sq_ema=second,
              param_numel=torch.tensor([float(s) for s in SIZES][:n] + [1.0] * (n - len(SIZES))),
              vgs_version=version)
    if version == "3.2":
        sd.update(min_scaling_factor=0.2, variance_cap=None)
    return sd


def _assert_same(got, want):
    """Tensors bit-identical with the same dtype; everything else equal."""
    if isinstance(want, torch.Tensor):
        assert isinstance(got, torch.Tensor) and got.dtype == want.dtype
        assert torch.equal(got, want)
    elif isinstance(want, dict):
        assert isinstance(got, dict) and set(got) == set(want)
        for key in want:
            _assert_same(got[key], want[key])
    else:
        assert type(got) is type(want) and got == want


@pytest.mark.parametrize("version", ["3.1", "3.2"])
def test_compatible_state_round_trips_bit_identically(version):
    sd = _legacy_state(version)
    original = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in sd.items()}
    vgs = VarianceGradientScaler(_params(), min_scaling_factor=0.3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vgs.load_state_dict(sd)
    out = vgs.state_dict()
    expected = {**original, "vgs_version": "3.2", "upgd_migrate_format": 1,
                "statistics_step_count": original["step_count"]}
    if version == "3.1":  # v3.2-only options keep the constructor's values
        expected.update(min_scaling_factor=0.3, variance_cap=50.0)
    _assert_same(out, expected)
    out["param_grad_mean_ema"].add_(1.0)
    _assert_same(vgs.state_dict(), expected)  # an output does not alias the live statistics
    for p in vgs.params:
        p.grad = torch.ones_like(p)
    vgs.step()
    _assert_same(sd, original)  # nor does the input


def test_resumed_run_matches_the_uninterrupted_one():
    params, gen = _params(), torch.Generator().manual_seed(4)
    grads = [_grads(gen, step) for step in range(10)]
    straight, resumed = VarianceGradientScaler(params, warmup_steps=2), None
    got, want = [], []
    for step, gs in enumerate(grads):
        if step == 5:
            resumed = VarianceGradientScaler(params, warmup_steps=99)
            resumed.load_state_dict(straight.state_dict())
        for p, g in zip(params, gs):
            p.grad = g
        want.append(straight.get_scaling_factor())
        straight.step()
        if resumed is not None:
            got.append(resumed.get_scaling_factor())
            resumed.step()
    assert got == want[5:] and len(set(got)) > 1


@pytest.mark.parametrize("version", ["2.0", "3.0"])
def test_incompatible_statistics_are_kept_reset_and_reported(version):
    sd = _legacy_state(version)
    vgs = VarianceGradientScaler(_params())
    message = (rf"^VGS v3\.1 CRITICAL FIX: state version {version} holds incompatible "
               r"per-parameter statistics \(.+\): "
               r"live statistics restart at the next step and the old ones are kept under "
               rf"'legacy_statistics'; step_count {STEP_COUNT} was preserved, so warmup is not "
               "re-applied")
    with pytest.warns(LegacyVGSStateWarning, match=message):
        vgs.load_state_dict(sd)
    out = vgs.state_dict()
    meaning = {"2.0": "EMA of E|g| / EMA of Var(g)", "3.0": "EMA of mean(g) / EMA of mean(g)^2"}
    _assert_same(out[LEGACY_KEY], {"vgs_version": version, "meaning": meaning[version],
                                   **{k: sd[k] for k in ("param_grad_mean_ema",
                                                         "param_grad_sq_ema", "param_numel")}})
    assert out["step_count"] == STEP_COUNT and out["vgs_version"] == "3.2"
    assert (out["beta"], out["alpha"], out["warmup_steps"]) == (0.95, 0.3, 20)
    assert {k: out[k] for k in V1_GLOBALS} == V1_GLOBALS
    assert all(out[k] is None for k in ("param_grad_mean_ema", "param_grad_sq_ema",
                                        "param_numel"))
    for p in vgs.params:
        p.grad = torch.ones_like(p)
    vgs.step()
    again = VarianceGradientScaler(_params())
    again.load_state_dict(vgs.state_dict())  # now a 3.2 state: no warning, legacy carried on
    _assert_same(again.state_dict()[LEGACY_KEY], out[LEGACY_KEY])


def test_v1_state_keeps_its_global_statistics():
    vgs = VarianceGradientScaler(_params())
    with pytest.warns(LegacyVGSStateWarning, match=rf"^VGS v3\.1 CRITICAL FIX: a v1 state has no "
                      rf"per-parameter statistics: .*; step_count {STEP_COUNT} was preserved"):
        vgs.load_state_dict(_legacy_state(None))
    out = vgs.state_dict()
    assert {k: out[k] for k in V1_GLOBALS} == V1_GLOBALS and LEGACY_KEY not in out
    assert out["step_count"] == STEP_COUNT and out["statistics_step_count"] == 0
    assert out["param_numel"] is None  # no statistics yet: they start at the next step


def test_the_reference_tests_match_our_v1_warning():
    """The reference's own test, on its words: a "1.0" state warns a UserWarning that matches
    "VGS v3.1 CRITICAL FIX", and leaves no per-parameter statistics."""
    vgs = VarianceGradientScaler(_params())
    old_state = {"enabled": True, "beta": 0.99, "alpha": 0.1, "eps": 1e-8, "warmup_steps": 100,
                 "step_count": 50, "vgs_version": "1.0"}
    with pytest.warns(UserWarning, match="VGS v3.1 CRITICAL FIX") as caught:
        vgs.load_state_dict(old_state)
    assert [str(w.message)[:29] for w in caught] == ["VGS v3.1 CRITICAL FIX: a v1 s"]
    assert vgs._param_grad_mean_ema is None and vgs._param_grad_sq_ema is None


@pytest.mark.parametrize("version", [None, "2.0", "3.0", "3.1", "3.2"])
def test_every_version_loads_and_steps_to_a_finite_factor(version):
    params, gen = _params(), torch.Generator().manual_seed(5)
    vgs = VarianceGradientScaler(params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LegacyVGSStateWarning)
        vgs.load_state_dict(_legacy_state(version))
    for step in range(3):
        for p, g in zip(params, _grads(gen, step)):
            p.grad = g
        c = vgs.scale_gradients()
        assert math.isfinite(c) and vgs.min_scaling_factor <= c <= 1.0
        vgs.step()
    assert vgs.step_count == STEP_COUNT + 3


def test_weights_only_round_trip():
    vgs = VarianceGradientScaler(_params())
    with pytest.warns(LegacyVGSStateWarning):
        vgs.load_state_dict({**_legacy_state("2.0"), "trainer_note": "kept"})
    buffer = io.BytesIO()
    torch.save(vgs.state_dict(), buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    _assert_same(loaded, vgs.state_dict())
    assert loaded["trainer_note"] == "kept"


@pytest.mark.parametrize("version", ["2.0", "3.1"])
def test_parameter_count_mismatch_raises(version):
    vgs = VarianceGradientScaler(_params()[:3])
    with pytest.raises(ValueError, match=r"holds 4 saved entries in 'param_grad_mean_ema' but "
                       r"this scaler has 3 parameters"):
        vgs.load_state_dict(_legacy_state(version))
    assert vgs.step_count == 0 and vgs.alpha == 0.1  # a refused state changes nothing


def test_parameter_size_mismatch_raises():
    vgs = VarianceGradientScaler(_params()[::-1])
    with pytest.raises(ValueError, match=r"param_numel\[0\] is 7 but parameter 0 has 1000 "
                       "elements"):
        vgs.load_state_dict(_legacy_state("3.1"))


def test_missing_keys_keep_the_scaler_values_as_the_reference_loader_does():
    sd = _legacy_state("3.2")
    del sd["alpha"], sd["step_count"]
    vgs = VarianceGradientScaler(_params(), alpha=0.7)
    vgs.load_state_dict(sd)
    assert vgs.alpha == 0.7 and vgs.step_count == 0 and vgs.beta == 0.95
    # A 3.1 state without its tensors: no statistics yet, as the reference reads it.
    vgs.load_state_dict({**_legacy_state(None), "vgs_version": "3.1"})
    assert vgs.param_grad_mean_ema is None and vgs.statistics_step_count == 0


def test_partial_statistics_are_refused():
    with pytest.raises(ValueError, match=r"has \['param_grad_mean_ema'\] but not all"):
        VarianceGradientScaler(_params()).load_state_dict(
            {**_legacy_state("3.2"), "param_grad_sq_ema": None, "param_numel": None})


def test_unknown_keys_survive_a_round_trip():
    extra = {"trainer_note": "from run 7", "clip_history": torch.arange(3.0)}
    vgs = VarianceGradientScaler(_params())
    vgs.load_state_dict({**_legacy_state("3.2"), **extra})
    _assert_same({k: vgs.state_dict()[k] for k in extra}, extra)


def test_unsupported_version_and_newer_format_are_refused():
    vgs = VarianceGradientScaler(_params())
    with pytest.raises(ValueError, match=r"Unsupported VGS state version '4.0'"):
        vgs.load_state_dict({**_legacy_state("3.2"), "vgs_version": "4.0"})
    with pytest.raises(ValueError, match="upgd_migrate_format 2"):
        vgs.load_state_dict({**_legacy_state("3.2"), "upgd_migrate_format": 2})


@pytest.mark.parametrize("version", [None, "2.0", "3.0"])
def test_restarted_statistics_are_bias_corrected_from_their_own_start(version):
    """A legacy state keeps step_count 5000 (no second warmup), but its statistics restart:
    the factor must then equal that of a fresh scaler fed the same gradients, not collapse
    because 1 - beta**5000 reads the nearly empty EMAs as settled."""
    sd = _legacy_state(version)
    sd["step_count"] = 5000
    params, gen = _params(), torch.Generator().manual_seed(11)
    loaded = VarianceGradientScaler(params)
    with pytest.warns(LegacyVGSStateWarning, match="bias-corrected from their own start"):
        loaded.load_state_dict(sd)
    fresh = VarianceGradientScaler(params, beta=loaded.beta, alpha=loaded.alpha, eps=loaded.eps,
                                   warmup_steps=0)
    for step in range(5):
        for p, g in zip(params, _grads(gen, step)):
            p.grad = g
        loaded.step()
        fresh.step()
        assert loaded.get_scaling_factor() == pytest.approx(fresh.get_scaling_factor(), rel=1e-6)
    assert loaded.state_dict()["statistics_step_count"] == 5


FIXTURE_SHAPES = [(16, 6), (16,), (2, 16), (2,), (1, 16), (1,)]  # fixtures/generate.py


@pytest.mark.parametrize("name", ["vgs_v1", "vgs_v2_0", "vgs_v3_0", "vgs_v3_1", "vgs_v3_2"])
def test_every_committed_vgs_fixture_loads(name):
    from pathlib import Path
    path = Path(__file__).resolve().parents[2] / "fixtures" / "vgs" / f"{name}.pt"
    sd = torch.load(path, weights_only=True)
    vgs = VarianceGradientScaler([torch.nn.Parameter(torch.zeros(s)) for s in FIXTURE_SHAPES])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vgs.load_state_dict(sd)
    out = vgs.state_dict()
    assert out["step_count"] == sd["step_count"]
    if name in ("vgs_v3_1", "vgs_v3_2"):
        assert not caught
        for key in ("param_grad_mean_ema", "param_grad_sq_ema", "param_numel"):
            assert out[key].dtype == sd[key].dtype and torch.equal(out[key], sd[key])
    else:
        assert [type(w.message) for w in caught] == [LegacyVGSStateWarning]
    for p in vgs.params:
        p.grad = torch.randn_like(p)
    vgs.step()
    assert 0.0 < vgs.get_scaling_factor() <= 1.0
