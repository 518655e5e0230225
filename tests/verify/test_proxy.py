"""The proxy built once per state and shared by its scenarios, the recorder that reads observed
steps, and driving without importing torch._dynamo."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from upgd_migrate.optim import AdaptiveUPGD, NoiseRecorder, UPGD
from upgd_migrate.verify import proxy as P, sample as S
from test_sample import legacy_state


def test_kept_gradients_are_the_draws_of_every_scenario(monkeypatch):
    proxy = P.build(legacy_state(), "AdaptiveUPGD", seed=0, device=torch.device("cpu"),
                    sample=2048)
    kept = P.Gradients(proxy, seed=0, steps=3)
    first, again = list(kept.each_step()), list(kept.each_step())
    assert kept.keep and all(a is b for x, y in zip(first, again) for a, b in zip(x, y))
    monkeypatch.setattr(P, "KEEP_ELEMENTS", 1)  # too large to keep: drawn again, the same
    redrawn = P.Gradients(proxy, seed=0, steps=3)
    assert not redrawn.keep
    for x, y in zip(first, redrawn.each_step()):
        assert all(torch.equal(a, b) and a is not b for a, b in zip(x, y))


def test_fresh_parameters_start_at_the_proxy_values_by_group():
    sd = legacy_state()
    sd["param_groups"] = [{**sd["param_groups"][0], "params": [0, 1]},
                          {**sd["param_groups"][0], "params": [2]}]
    proxy = P.build(sd, "AdaptiveUPGD", 0, torch.device("cpu"), sample=64)
    params, groups = proxy.fresh()
    params[0].data.add_(1.0)  # a scenario steps its own copy
    assert [len(g) for g in groups] == [2, 1] and groups[1][0] is params[2]
    assert not torch.equal(params[0], proxy.initial[0])
    assert proxy.numels == [30_000, 12_000, 50] and proxy.sampled


def _run(recorder_of, adaptive: bool) -> NoiseRecorder:
    torch.manual_seed(5)
    params = [torch.nn.Parameter(torch.randn(n)) for n in (300, 40, 7)]
    opt = AdaptiveUPGD([{"params": params[:2]}, {"params": params[2:], "sigma": 0.0}],
                       sigma=0.01, adaptive_noise=adaptive)
    rec = recorder_of(opt)
    with rec:
        for step in range(4):
            for p in params:
                p.grad = torch.randn(p.shape) * (step + 1)
            if isinstance(rec, S.ObservedRecorder):
                rec.arm()
            opt.step()
    return rec


@pytest.mark.parametrize("adaptive", [False, True])
def test_observed_recorder_gives_the_noise_hooks_figures(adaptive):
    hooked = _run(NoiseRecorder, adaptive)
    observed = _run(lambda opt: S.ObservedRecorder(opt, {}), adaptive)
    assert len(observed.steps) == len(hooked.steps) == 4
    for a, b in zip(observed.steps, hooked.steps):
        # a noiseless group (fixed sigma 0) is left out, as the hook never saw it; adaptive
        # noise with sigma 0 still draws at min_noise_std
        assert a.numels == b.numels == ([300, 40, 7] if adaptive else [300, 40])
        assert a.ratios == pytest.approx(b.ratios, rel=1e-5)
        assert a.noise_rms == pytest.approx(b.noise_rms, rel=1e-5)


def test_observed_recorder_weights_by_the_saved_numel():
    p = torch.nn.Parameter(torch.zeros(10))
    opt = UPGD([p], sigma=0.1)
    rec = S.ObservedRecorder(opt, {id(p): 1000})
    p.grad = torch.ones(10)
    rec.arm()
    opt.step()
    assert rec.steps[0].numels == [1000] and rec.steps[0].ratios[0] > 0


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_finite_sees_one_bad_element(bad):
    t = torch.randn(50_000)
    assert S.finite(t)
    t[12_345] = bad
    assert not S.finite(t)
    assert S.finite(torch.empty(0)) and S.finite(torch.arange(5))


def test_driving_imports_no_dynamo_and_leaves_torch_as_it_was():
    code = (
        "import sys, torch\n"
        "from test_sample import legacy_state\n"
        "from upgd_migrate.verify.drive import verify_optimizer\n"
        "from upgd_migrate.verify.nodynamo import _CACHE, _wrapped_methods\n"
        "assert len(_wrapped_methods()) >= 2\n"
        "verify_optimizer(legacy_state(), 's', steps=2, sample=64)\n"
        "assert 'torch._dynamo' not in sys.modules\n"
        "assert not any(hasattr(f, _CACHE) for f in _wrapped_methods())\n"
        "print('ok')\n")
    here = str(__import__("pathlib").Path(__file__).parent)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=here, check=False)
    assert out.stdout.strip() == "ok", out.stderr[-2000:]
