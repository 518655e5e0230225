"""The CPU step in two lanes: the noise draw on the calling thread, the arithmetic beside it.

On CPU, torch draws Gaussian numbers from one generator stream on one core, about 7 ns a float
however many threads there are: on a 10M-parameter model the draw alone costs more than the
rest of the step. Nothing else in the step needs the noise until its last pass, so with a
spare intra-op thread the step runs in two lanes:

- the calling thread draws every noisy group's noise, in group order, from the default
  generator: the very numbers the sequential step and the single-tensor reference draw. Then,
  once the worker has updated the utility traces (the last reader of the old parameters), it
  applies the weight decay.
- one worker thread updates the traces, takes the utility range, computes the gates, ``x`` (the
  gradient, or Adam's direction) and, for adaptive noise, each tensor's noise std.
- a tail on the calling thread puts ``x + std*z`` in the noise buffer and writes each parameter
  once, ``p -= lr * gate * (x + noise)``, as the reference does, so the two agree to rounding.

CPU values can be read without waiting for a device, so the range and the noise stds are host
floats here and the gate takes three passes instead of six (see :func:`_host_gates`).

Used only where it pays (:func:`pays`): CPU tensors, more than one intra-op thread (a user who
set ``torch.set_num_threads(1)`` keeps one), no noise hook, and enough noise in tensors large
enough to hide the work behind.
The worker is one thread per process, made on first use and made again in a forked child.
"""
from __future__ import annotations

import math
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor

import torch
from torch import Tensor

from upgd_migrate.optim import _observe
from upgd_migrate.optim._functional import (
    UTILITY_RANGE_EPS,
    GroupBatch,
    NoiseHook,
    draw_noise,
    group_buffer,
    is_noisy,
)
from upgd_migrate.optim._multi_tensor import (
    apply_decay,
    direction_of,
    noise_stds,
    update_traces,
    x_norms,
)
from upgd_migrate.optim._observe import StepObserver

# Below either size the hand-off and the per-tensor ops cost more than the draw hides (measured
# on 2 cores: 100 tensors of 5,000 elements break even, of 10,000 gain a fifth).
MIN_NOISE_NUMEL = 1 << 15
MIN_MEAN_NUMEL = 1 << 13

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _forget_pool_in_child() -> None:
    # A forked child has only the thread that forked: the parent's worker is not there.
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_in_child)


def _worker() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(1, thread_name_prefix="upgd-migrate-step")
        return _pool


def _spare_thread() -> bool:
    return torch.get_num_threads() >= 2


def pays(batches: list[GroupBatch], hook: NoiseHook | None) -> bool:
    """Whether the two-lane step is worth its hand-off for these groups."""
    if hook is not None or not _spare_thread():
        return False
    if any(b.sharding is not None for b in batches):
        return False  # its whole-tensor reductions would be collectives on the worker thread
    if any(p.device.type != "cpu" for b in batches for p in b.params):
        return False
    sizes = [p.numel() for b in batches if is_noisy(b) for p in b.params]
    total = sum(sizes)
    return total >= MIN_NOISE_NUMEL and total >= MIN_MEAN_NUMEL * len(sizes)


def _host_utility_ranges(batch: GroupBatch) -> list[tuple[float, float]]:
    """Update the traces; return each tensor's ``(min û, max û)`` as host floats.

    ``û = c*u`` with ``c > 0`` per tensor, so ``min û = c * min u``: the range comes without
    writing ``û`` anywhere.
    """
    update_traces(batch)
    pairs = [(c, u) for c, u in zip(batch.utility_inv_bc(), batch.utils) if u.numel()]
    if not pairs:
        return []
    values = torch.stack([m for _, u in pairs for m in torch.aminmax(u)]).tolist()
    return [(c * values[2 * i], c * values[2 * i + 1]) for i, (c, _) in enumerate(pairs)]


def _host_gates(batch: GroupBatch, lo: float, hi: float, scratch: dict) -> list[Tensor]:
    """The gates ``sigmoid(1 - 2n)`` from host scalars: ``1 - 2n = 1 + a*(c*u - lo)``.

    ``a = -2/(hi-lo+eps)`` and ``c`` is each tensor's bias correction, so ``c*u`` is ``û``. When
    the range straddles zero (the usual case: utilities of both signs) both terms of
    ``(1 - a*lo) + (a*c)*u`` are at most 2 in size, so one pass loses nothing to cancellation.
    Otherwise (utilities clustered away from zero, or all equal) ``u - lo/c`` comes first: exact
    at the minimum, as the reference's ``û - lo`` is, so equal utilities still give ``n = 0``.
    """
    flat, views = group_buffer(scratch, "gate", batch)
    a = -2.0 / (hi - lo + UTILITY_RANGE_EPS)
    cs = batch.utility_inv_bc()
    if lo <= 0.0 <= hi:
        offset = flat.new_full((), 1.0 - a * lo)
        for view, u, c in zip(views, batch.utils, cs):
            torch.add(offset, u, alpha=a * c, out=view)
    else:
        for view, u, c in zip(views, batch.utils, cs):
            torch.sub(u, lo / c, out=view)
        one = flat.new_ones(())
        if all(c == cs[0] for c in cs):
            torch.add(one, flat, alpha=a * cs[0], out=flat)
        else:
            for view, c in zip(views, cs):
                torch.add(one, view, alpha=a * c, out=view)
    flat.sigmoid_()
    return views


def _traces_and_range(batches: list[GroupBatch]) -> tuple[float, float]:
    """Worker, first job: every utility trace, then the range of ``û`` over all groups."""
    with torch.no_grad():  # grad mode is per thread
        ranges = [r for b in batches for r in _host_utility_ranges(b)]
    if not ranges:
        return 0.0, 0.0
    if any(math.isnan(v) for r in ranges for v in r):
        return math.nan, math.nan  # as the reference's min/max would: every gate NaN
    return min(r[0] for r in ranges), max(r[1] for r in ranges)


def _gates_and_directions(batches: list[GroupBatch], traces: Future, scratch: dict,
                          observed: bool) -> list[tuple]:
    """Worker, second job: per group the gates, ``x``, the noise stds (host floats; None for
    fixed noise, drawn at its std, and for a noiseless group) and, on an observed step, the
    start of the group's row (host floats): ``||x||`` per tensor (the adaptive std's own
    norms, taken once) and the gates' sum, read on this lane, which wrote them."""
    lo, hi = traces.result()  # done: the worker runs its jobs in order
    out = []
    with torch.no_grad():
        for b in batches:
            gates = _host_gates(b, lo, hi, scratch)
            gate_sum = _observe.total(gates, gates[0].device).item() if observed else None
            x = direction_of(b, scratch)
            stds = norms = None
            if is_noisy(b) and b.hp.get("adaptive_noise", False):
                taken = x_norms(b, x)
                stds = torch.stack(noise_stds(b, x, scratch, taken)).tolist()
                norms = taken.float().tolist() if observed else None
            elif observed:
                norms = _observe.norms(x).tolist()
            out.append((x, gates, stds, norms, gate_sum))
    return out


def step(batches: list[GroupBatch], scratch: dict, observe: StepObserver | None = None) -> None:
    # Measured both ways: drawing on the worker instead hides nothing, as the draw then
    # collides with the calling thread's intra-op threads.
    pool = _worker()
    traces = pool.submit(_traces_and_range, batches)
    rest = pool.submit(_gates_and_directions, batches, traces, scratch, observe is not None)
    try:
        noises = [draw_noise(b, scratch) if is_noisy(b) else None for b in batches]
        # Observed: the noise's norms, on this lane, which drew it, while the worker's runs.
        # (Measured: the reductions cost least on the lane that wrote their data; read on
        # the other, after the lanes join, they cost twice as much.)
        noise_norms = [None if observe is None or z is None else _observe.norms(z).tolist()
                       for z in noises]
        traces.result()  # the traces have read the old parameters: now they may change
        for b in batches:
            apply_decay(b)
    finally:
        lasts = rest.result()  # never return while the worker still writes
    for b, noise, zs, (x, gates, stds, xs, gate_sum) in zip(batches, noises, noise_norms, lasts):
        if observe is not None:  # the row: ||x||, ||noise|| (times its std), sum of the gates
            zs = [0.0] * len(x) if zs is None else zs
            if stds is not None:  # the adaptive noise was drawn at unit std
                zs = [z * s for z, s in zip(zs, stds)]
            observe(b, xs + zs + [gate_sum])
        if noise is not None:
            # x + noise goes into the noise buffer (x may be the user's gradients)
            if stds is None:
                torch._foreach_add_(noise, x)
            else:
                for xi, z, std in zip(x, noise, stds):
                    torch.add(xi, z, alpha=std, out=z)
            x = noise
        torch._foreach_addcmul_(b.params, x, gates, value=-b.hp["lr"])
