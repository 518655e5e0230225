"""Timing, host-sync counting and peak memory of optimizer steps on the CPU or a CUDA device,
for bench/optim (and through it bench/device-check).

On CUDA a step's time is read from CUDA events recorded around it, after warm-up; the host
never waits inside the timed loop, so a step bound by launches shows its launch time and one
bound by the device its kernel time. Syncs are counted under
``torch.cuda.set_sync_debug_mode("warn")`` and the step is run once more under ``"error"``,
which must raise nothing for a sync-free step. On the CPU the timings are wall clock, as before,
and the CUDA-only figures are None (printed "-").
"""
from __future__ import annotations

import statistics
import time
import warnings
from typing import Callable

import torch

SYNC_WARNING = "synchronizing"  # torch's text: "called a synchronizing CUDA operation"


def is_cuda(device: str | torch.device) -> bool:
    return torch.device(device).type == "cuda"


def wait(device: str | torch.device) -> None:
    if is_cuda(device):
        torch.cuda.synchronize()


def count_syncs(step: Callable[[], object], steps: int) -> float:
    """Host syncs per call of ``step`` on CUDA: the warnings that "warn" mode raises."""
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for _ in range(steps):
                step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    return sum(SYNC_WARNING in str(w.message) for w in caught) / steps


def raises_on_sync(step: Callable[[], object]) -> str | None:
    """The error "error" mode raises inside one call of ``step``, or None when it syncs not."""
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        step()
    except RuntimeError as e:
        return str(e).splitlines()[0]
    finally:
        torch.cuda.set_sync_debug_mode("default")
        torch.cuda.synchronize()
    return None


def warm_up(make: Callable[[], object], device: str,
            warmup: int) -> tuple[object, float, float | None]:
    """Build a contender and take ``warmup`` steps: (optimizer, seconds per warm-up step, MiB
    its state and step workspace add at their peak over what was allocated before, or None)."""
    cuda = is_cuda(device)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    start = time.perf_counter()
    opt = make()
    for _ in range(warmup):
        opt.step()
    wait(device)
    seconds = (time.perf_counter() - start) / max(warmup, 1)
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20 if cuda else None
    return opt, seconds, peak


def fit_steps(steps: int, round_s: float, budget_s: float | None, floor: int = 3) -> int:
    """The timed rounds that fit ``budget_s`` at ``round_s`` a round (at least ``floor``)."""
    if budget_s is None or round_s <= 0:
        return steps
    return max(floor, min(steps, int(budget_s / round_s)))


def round_robin(optimizers: dict, steps: int, device: str) -> dict[str, list[float]]:
    """Seconds of each step, one step of each contender per round (a busy machine slows all
    alike). CUDA: events around each step, read after the last round."""
    if not is_cuda(device):
        times: dict[str, list[float]] = {name: [] for name in optimizers}
        for _ in range(steps):
            for name, opt in optimizers.items():
                start = time.perf_counter()
                opt.step()
                times[name].append(time.perf_counter() - start)
        return times
    events: dict[str, list] = {name: [] for name in optimizers}
    for _ in range(steps):
        for name, opt in optimizers.items():
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            opt.step()
            end.record()
            events[name].append((begin, end))
    torch.cuda.synchronize()
    return {name: [b.elapsed_time(e) / 1e3 for b, e in pairs] for name, pairs in events.items()}


def measure(makers: dict, steps: int, device: str = "cpu", warmup: int = 3,
            budget_s: float | None = None) -> tuple[dict[str, dict], int]:
    """Per contender: median ms per step, syncs per step, whether "error" mode raised, extra
    peak MiB (the last three None on the CPU); and the timed steps, trimmed to ``budget_s``
    (the measuring after warm-up) from the warm-up's time per round."""
    start = time.perf_counter()
    optimizers, peaks, round_s = {}, {}, 0.0
    for name, make in makers.items():
        optimizers[name], seconds, peaks[name] = warm_up(make, device, warmup)
        round_s += seconds
    cuda = is_cuda(device)
    if budget_s is not None:  # the sync checks take about 4 rounds when on CUDA
        budget_s -= time.perf_counter() - start + (4 * round_s if cuda else 0.0)
    steps = fit_steps(steps, round_s, budget_s)
    times = round_robin(optimizers, steps, device)
    results = {}
    for name, opt in optimizers.items():
        results[name] = {"ms": statistics.median(times[name]) * 1e3, "peak_mib": peaks[name],
                         "syncs_per_step": count_syncs(opt.step, 3) if cuda else None,
                         "sync_error": raises_on_sync(opt.step) if cuda else None}
    return results, steps


def cell(value: float | None, fmt: str) -> str:
    """A figure, or "-" where the device has none (the CPU's syncs and memory)."""
    return "-" if value is None else format(value, fmt)
