"""The CPU two-lane step: when it is taken, the branches of its gate, its worker thread."""
from __future__ import annotations

import os
import sys
import threading
import time

import pytest
import torch
from optim_helpers import use_schedule

from upgd_migrate.optim import UPGD, AdaptiveUPGD, NoiseRecorder
from upgd_migrate.optim import _two_lane as L


def _grads_step(opt, params, gen, sign=None, sit_out=None):
    for i, p in enumerate(params):
        g = torch.randn(p.shape, generator=gen, dtype=p.dtype)
        # sign=-1 makes every utility -g*p positive: utilities clustered away from zero
        p.grad = g if sign is None else sign * g.abs() * torch.sign(p.detach())
        if i == sit_out:
            p.grad = None  # its step count falls behind: its own bias correction
    opt.step()


def _run(schedule, monkeypatch, shapes, steps=30, sit_out=None, sign=None, dtype=torch.float32,
         **kwargs):
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s, dtype=dtype)) for s in shapes]
    foreach, ran = use_schedule(schedule, monkeypatch)
    opt = AdaptiveUPGD(params, lr=1e-2, foreach=foreach, **kwargs)
    gen = torch.Generator().manual_seed(1)
    for t in range(steps):
        _grads_step(opt, params, gen, sign, sit_out if t % 3 == 0 else None)
    return [p.detach().clone() for p in params] + [
        v.clone() for p in params for v in opt.state[p].values() if isinstance(v, torch.Tensor)
    ], ran


@pytest.mark.parametrize("sit_out", [None, 1], ids=["one-bias-correction", "per-tensor"])
@pytest.mark.parametrize("mode", [{}, {"adaptive_noise": True, "sigma": 0.05}],
                         ids=["fixed", "adaptive"])
def test_clustered_utilities_take_the_exact_gate_and_agree(monkeypatch, mode, sit_out):
    """All utilities positive: the gate subtracts the minimum first (both bias-correction
    cases), and the result still matches the single-tensor reference."""
    shapes = [(40, 30), (30,), (7, 5)]
    ref, _ = _run("single-tensor", monkeypatch, shapes, sit_out=sit_out, sign=-1.0, **mode)
    got, ran = _run("two-lane", monkeypatch, shapes, sit_out=sit_out, sign=-1.0, **mode)
    assert ran["two-lane"] == 30
    traces = [t for t in got[len(shapes):] if t.shape in shapes][::3]
    assert traces and all(bool((t > 0).all()) for t in traces)  # clustered: every utility > 0
    for a, b in zip(ref, got):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_float64_agrees_to_double_rounding(monkeypatch):
    shapes = [(20, 10), (10,)]
    kwargs = {"adaptive_noise": True, "sigma": 0.05, "dtype": torch.float64}
    ref, _ = _run("single-tensor", monkeypatch, shapes, **kwargs)
    got, ran = _run("two-lane", monkeypatch, shapes, **kwargs)
    assert ran["two-lane"] == 30
    for a, b in zip(ref, got):
        assert a.dtype == torch.float64
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_agrees_with_the_multi_tensor_step_to_its_rounding(monkeypatch, dtype):
    """The host-scalar gate rounds differently from the flat one: in 16-bit floats the two
    steps may differ by the dtype's rounding, and no more."""
    shapes = [(60, 40), (40,)]
    kwargs = {"adaptive_noise": True, "sigma": 0.05, "dtype": dtype, "steps": 20}
    ref, _ = _run("multi-tensor", monkeypatch, shapes, **kwargs)
    got, ran = _run("two-lane", monkeypatch, shapes, **kwargs)
    assert ran["two-lane"] == 20
    tol = 2 * torch.finfo(dtype).eps
    for a, b in zip(ref[:len(shapes)], got[:len(shapes)]):
        assert b.dtype == dtype and torch.isfinite(b).all()
        torch.testing.assert_close(a.float(), b.float(), rtol=tol, atol=tol)


@pytest.mark.parametrize("schedule", ["single-tensor", "multi-tensor", "two-lane"])
def test_a_zero_size_parameter_is_stepped_over(monkeypatch, schedule):
    shapes = [(6, 4), (0,), (4,)]
    ref, _ = _run("multi-tensor", monkeypatch, shapes, steps=5)
    got, _ = _run(schedule, monkeypatch, shapes, steps=5)
    for a, b in zip(ref, got):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_nan_utilities_make_every_gate_nan_as_in_the_reference(monkeypatch):
    params = [torch.nn.Parameter(torch.ones(8)), torch.nn.Parameter(torch.ones(8))]
    foreach, ran = use_schedule("two-lane", monkeypatch)
    opt = UPGD(params, lr=0.1, sigma=0.0, weight_decay=0.0, foreach=foreach)
    params[0].grad = torch.full((8,), float("nan"))
    params[1].grad = torch.ones(8)
    opt.step()
    assert ran["two-lane"] == 1 and torch.isnan(params[1]).all()


class TestWhenItPays:
    def _batches(self, numel, sigma=1e-3, device="cpu", tensors=1):
        params = [torch.nn.Parameter(torch.zeros(numel // tensors, device=device))
                  for _ in range(tensors)]
        for p in params:
            p.grad = torch.zeros_like(p)
        opt = AdaptiveUPGD(params, sigma=sigma)
        return [opt._init_group(opt.param_groups[0], 0)]

    def test_large_noisy_cpu_groups_with_a_spare_thread(self, monkeypatch):
        monkeypatch.setattr(L, "_spare_thread", lambda: True)
        assert L.pays(self._batches(L.MIN_NOISE_NUMEL), None)
        if torch.cuda.is_available():  # CUDA steps never wait on the host, so they stay whole
            assert not L.pays(self._batches(L.MIN_NOISE_NUMEL, device="cuda"), None)
        assert not L.pays(self._batches(L.MIN_NOISE_NUMEL - 1), None)
        assert not L.pays(self._batches(L.MIN_NOISE_NUMEL, sigma=0.0), None)  # nothing to hide
        many_small = L.MIN_NOISE_NUMEL * 4 // L.MIN_MEAN_NUMEL * 2  # tensors of half the mean
        assert not L.pays(self._batches(L.MIN_NOISE_NUMEL * 4, tensors=many_small), None)
        assert L.pays(self._batches(L.MIN_NOISE_NUMEL * 4, tensors=many_small // 2), None)
        assert not L.pays(self._batches(L.MIN_NOISE_NUMEL), lambda p, x, xi: None)

    def test_one_intra_op_thread_keeps_one_thread(self):
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            assert not L.pays(self._batches(L.MIN_NOISE_NUMEL), None)
        finally:
            torch.set_num_threads(before)

    def test_a_noise_hook_sees_the_sequential_step(self, monkeypatch):
        foreach, ran = use_schedule("two-lane", monkeypatch)
        p = torch.nn.Parameter(torch.randn(64))
        opt = AdaptiveUPGD([p], foreach=foreach)
        p.grad = torch.randn(64)
        with NoiseRecorder(opt) as recorder:
            opt.step()
        assert ran["two-lane"] == 0 and len(recorder.steps) == 1
        opt.step()
        assert ran["two-lane"] == 1


def test_a_failing_worker_raises_from_step_and_the_next_step_works(monkeypatch):
    foreach, ran = use_schedule("two-lane", monkeypatch)
    p = torch.nn.Parameter(torch.randn(16))
    opt = AdaptiveUPGD([p], foreach=foreach)
    p.grad = torch.randn(16)
    opt.step()
    opt.state[p]["avg_utility"] = torch.zeros(3)  # a corrupted state: the traces cannot update
    with pytest.raises(RuntimeError):
        opt.step()
    opt.state[p]["avg_utility"] = torch.zeros(16)
    opt.step()
    assert ran["two-lane"] == 3 and torch.isfinite(p).all()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork (POSIX)")
def test_a_forked_child_does_not_inherit_the_worker(monkeypatch):
    """The parent's worker thread does not exist in a forked child: the child must make its
    own rather than queue work for a thread that will never run it."""
    foreach, ran = use_schedule("two-lane", monkeypatch)
    p = torch.nn.Parameter(torch.randn(16))
    opt = AdaptiveUPGD([p], foreach=foreach)
    p.grad = torch.randn(16)
    opt.step()
    assert ran["two-lane"] == 1 and L._pool is not None
    pid = os.fork()
    if pid == 0:  # the child: only look, run nothing (OpenMP is not fork-safe either)
        os._exit(0 if L._pool is None and not L._pool_lock.locked() else 1)
    deadline = time.monotonic() + 30
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0:
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            pytest.fail("the forked child did not exit")
        time.sleep(0.01)
    assert os.waitstatus_to_exitcode(done[1]) == 0
    assert L._pool is not None  # the parent keeps its worker


def test_the_worker_is_one_thread_for_the_process(monkeypatch):
    foreach, _ = use_schedule("two-lane", monkeypatch)
    params = [torch.nn.Parameter(torch.randn(16)) for _ in range(2)]
    opts = [AdaptiveUPGD([q], foreach=foreach) for q in params]
    for q, opt in zip(params, opts):
        q.grad = torch.randn(16)
        opt.step()
    names = [t.name for t in threading.enumerate() if t.name.startswith("upgd-migrate-step")]
    assert len(names) == 1, names
    assert sys.modules["upgd_migrate.optim._two_lane"]._pool is L._pool
