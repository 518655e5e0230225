"""Watch the noise while training: the noise-to-update ratio and the VGS factor, every k steps.

:class:`NoiseMonitor` attaches to UPGD-family optimizers (and optionally a VGS) through torch's
step hooks and, every ``every`` steps, yields a dict of floats:

- ``upgd/noise_to_update_ratio``: ``||xi|| / ||x||`` per tensor, weighted by numel
  (docs/optimizers.md; per step, the value ``verify`` aggregates over its K steps); ``sigma``
  when the noise is adaptive;
- ``upgd/noise_rms``, ``upgd/update_rms``: root mean square over all elements of the noise
  ``xi`` and of ``x``, what the noise is added to (the gradient for UPGD, Adam's direction for
  AdaptiveUPGD and UPGDW), before the gate and the learning rate;
- ``upgd/gate_mean``: mean of the utility gate ``1-s`` (0.27 to 0.73);
- with a VGS: ``vgs/scaling_factor`` (the factor this step's gradients were scaled by) and
  ``vgs/normalized_variance`` (the global value that factor comes from).

A second and later optimizer get the prefix ``upgd_1/``, ``upgd_2/``, ... instead of ``upgd/``.

It changes nothing the optimizer computes: a logged step hands over the norms of its parts
through ``observe_next_step`` (read-only, same draws, same ops, same schedule; see
:mod:`._observe`) and an unlogged step sees a counter increment and nothing else, so it stays
on the fast path and, on CUDA, never waits for the device; only a logged step reads its few
numbers back to the host. Under FSDP2 the metrics are of the whole tensors, the same on every
rank: a logged step is then one collective per param group, so every rank must log the same
steps (``every=k`` does; :meth:`arm` on every rank).
"""
from __future__ import annotations

import math
from typing import Callable, Iterable, Optional

import torch

from upgd_migrate.optim._functional import numels
from upgd_migrate.optim.upgd import _UPGDBase

# k: a logged step costs 5-15% of a step of a PPO-sized model on a 2-core CPU (bench/optim
# --monitor), so 1 in 50 stays under 1%; Lightning's default log_every_n_steps is 50 too.
DEFAULT_EVERY = 50
Callback = Callable[[int, dict], None]


def upgd_optimizers(candidates: Iterable) -> list[_UPGDBase]:
    """The UPGD-family optimizers among ``candidates`` (each at most once, in order)."""
    found: list[_UPGDBase] = []
    for opt in candidates:
        if isinstance(opt, _UPGDBase) and all(opt is not f for f in found):
            found.append(opt)
    return found


def vgs_normalized_variance(vgs) -> float:
    """The global normalised variance the VGS factor is computed from (0.0 before any data)."""
    read = getattr(vgs, "get_normalized_variance", None)
    if callable(read):
        return float(read())
    # A VGS without the reference's accessor: the same 90th percentile get_scaling_factor takes.
    if not getattr(vgs, "statistics_step_count", 0):
        return 0.0
    nv = torch.nanquantile(vgs._normalised_variances(), 0.9, interpolation="linear")
    nv = torch.nan_to_num(nv, nan=0.0).clamp(0.0, 1e6)
    if vgs.variance_cap is not None:
        nv = nv.clamp_max(vgs.variance_cap)
    return float(nv)


class _Step:
    """The rows one observed step of one optimizer showed (see :mod:`._observe`), kept as
    they came (on the device, or host floats) until :meth:`metrics` reads them."""

    def __init__(self) -> None:
        self.numels: list[int] = []
        self._rows: list = []

    def __call__(self, batch, row) -> None:
        self._rows.append(row)
        self.numels += numels(batch)  # a sharded group's row is of its whole tensors

    def metrics(self) -> dict[str, float]:
        x, xi, gate_sum = [], [], 0.0
        for row in self._rows:
            values = row if isinstance(row, list) else row.tolist()  # the host read
            n = (len(values) - 1) // 2
            x += values[:n]
            xi += values[n:2 * n]
            gate_sum += values[-1]
        total = sum(self.numels)
        if not total:
            return {}
        ratio = sq_x = sq_xi = 0.0
        for n, a, b in zip(self.numels, x, xi):
            ratio += n * (b / a if a else (0.0 if b == 0 else math.inf)) if n else 0.0
            sq_x += a * a
            sq_xi += b * b
        return {"noise_to_update_ratio": ratio / total,
                "noise_rms": math.sqrt(sq_xi / total),
                "update_rms": math.sqrt(sq_x / total),
                "gate_mean": gate_sum / total}


class NoiseMonitor:
    """Noise metrics of UPGD-family optimizers every ``every`` steps, as dicts of floats.

    ``every=None`` logs only the steps :meth:`arm` asks for (a trainer that knows when its
    logger writes).

    ``callback(step, metrics)`` is called after each logged step (``step``: that optimizer's
    steps since the monitor attached, counting from 1; the first step is always logged, so a
    spike on resume shows). :attr:`latest` keeps the newest metrics and :meth:`pop` hands them
    out once. Use as a context manager, or call :meth:`close` to detach.
    """

    def __init__(self, optimizers, vgs=None, every: Optional[int] = DEFAULT_EVERY,
                 callback: Optional[Callback] = None) -> None:
        candidates = optimizers if isinstance(optimizers, (list, tuple)) else [optimizers]
        self.optimizers = upgd_optimizers(candidates)
        if not self.optimizers or len(self.optimizers) != len(candidates):
            names = ", ".join(type(o).__name__ for o in candidates) or "nothing"
            raise TypeError(f"NoiseMonitor watches UPGD, AdaptiveUPGD or UPGDW optimizers, "
                            f"got {names}")
        if every is not None and every < 1:
            raise ValueError(f"Invalid every: {every} (log every k >= 1 steps, or None: when armed)")
        self.vgs, self.every = vgs, every
        self.callbacks: list[Callback] = [callback] if callback is not None else []
        self.latest: Optional[dict[str, float]] = None
        self.steps = [0] * len(self.optimizers)
        self._fresh = False
        self._armed: set[int] = set()
        self._stepping: set[int] = set()
        self._pending: dict[int, _Step] = {}
        self._vgs_values: dict[str, float] = {}
        self._handles = []
        for i, opt in enumerate(self.optimizers):
            self._handles.append(opt.register_step_pre_hook(self._before(i)))
            self._handles.append(opt.register_step_post_hook(self._after(i)))

    def prefix(self, index: int) -> str:
        return "upgd/" if index == 0 else f"upgd_{index}/"

    def arm(self, optimizer=None) -> None:
        """Log a step of ``optimizer`` (default: of every one), whatever ``every`` says: the
        step under way if called from inside it (a closure, a trainer's before-step hook),
        else the next one."""
        for i, opt in enumerate(self.optimizers):
            if optimizer is not None and opt is not optimizer:
                continue
            if i in self._stepping:
                self._start(i)
            else:
                self._armed.add(i)

    def _due(self, i: int) -> bool:
        armed = i in self._armed
        self._armed.discard(i)
        return armed or (self.every is not None and (self.steps[i] - 1) % self.every == 0)

    def _start(self, i: int) -> None:
        if i in self._pending:
            return
        self._pending[i] = _Step()
        self.optimizers[i].observe_next_step(self._pending[i])
        if i == 0 and self.vgs is not None:
            # The VGS moves on only in vgs.step(), after the optimizer step: read now, this
            # is the factor scale_gradients applies to this step's gradients.
            self._vgs_values = {"vgs/scaling_factor": float(self.vgs.get_scaling_factor()),
                                "vgs/normalized_variance": vgs_normalized_variance(self.vgs)}

    def _before(self, i: int):
        def hook(opt, args, kwargs) -> None:
            # Left over only by a step that raised: start clean.
            self._pending.pop(i, None)
            opt.__dict__.pop("_observer", None)
            self.steps[i] += 1
            self._stepping.add(i)
            if self._due(i):
                self._start(i)
        return hook

    def _after(self, i: int):
        def hook(opt, args, kwargs) -> None:
            self._stepping.discard(i)
            observed = self._pending.pop(i, None)
            if observed is None:
                return
            metrics = {self.prefix(i) + k: v for k, v in observed.metrics().items()}
            if i == 0:
                metrics.update(self._vgs_values)
            if not metrics:
                return  # no parameter had a gradient: nothing stepped
            self.latest, self._fresh = metrics, True
            for callback in self.callbacks:
                callback(self.steps[i], metrics)
        return hook

    def pop(self) -> Optional[dict[str, float]]:
        """The metrics of the newest logged step, once; None when none came since."""
        if not self._fresh:
            return None
        self._fresh = False
        return self.latest

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        for opt in self.optimizers:
            opt.__dict__.pop("_observer", None)

    def __enter__(self) -> "NoiseMonitor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
