"""Sampled proxies: verify drives at most ``sample`` elements of each tensor, not all of it.

Every quantity verify measures on a run is per element or an RMS over a tensor (the
noise-to-update ratio ``||xi|| / ||x||``, the noise level, the adaptive noise std
``sigma * rms(d)``), and each element of a proxy evolves on its own: its gradient is drawn from
its own saved moments and the parameters never feed back into the gradients. So a uniform
sample of a tensor's elements (drawn with replacement, seeded) estimates each tensor's figure,
and the tensors are still combined by their *saved* numel. What stays whole-tensor:

- the packaged VGS's factors: they depend on each tensor's spatial mean ``M`` and mean square
  ``Q`` of the gradient (a sample's would be far noisier than the whole tensor's), so the scaler
  is fed, per step and tensor, a draw of the whole tensor's ``(M, Q)`` from their joint law
  (``M`` exactly Gaussian; ``Q`` by the central limit theorem, its weighted chi-square part as a
  Gaussian of the same mean and variance) as a two-element gradient ``M +- sqrt(Q - M^2)``,
  and the sampled run's gradients are scaled by the factors it returns;
- finiteness of the saved state: every tensor is checked in full before the run;
- the target, the pre-migration and the reference resume levels, read from the whole state.

The error this brings is written down in the verify docs: a relative standard error of
``1 / sqrt(2 * sample * steps)`` on an adaptive state's ratio per tensor, well inside the
checks' tolerances at the default sample.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any, Iterator, Mapping

import torch

from upgd_migrate.optim import NoiseRecorder
from upgd_migrate.optim._functional import is_noisy
from upgd_migrate.optim.metrics import StepRecord

DEFAULT_SAMPLE = 4096  # elements per tensor; 0 drives full-size proxies


@contextmanager
def one_thread(sample: int) -> Iterator[None]:
    """Sampled runs on one torch thread: their tensors are far below the size torch splits
    over threads, and idle intra-op threads spinning at every parallel region's barrier cost
    several times the work on a busy machine (6 s against 38 s of CPU for 16 states)."""
    before = torch.get_num_threads()
    if not sample or before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def indices(numel: int, sample: int, gen: torch.Generator) -> torch.Tensor | None:
    """Positions to keep in a flattened tensor of ``numel``; None keeps all of it."""
    if not sample or numel <= sample:
        return None
    return torch.randint(numel, (sample,), generator=gen)


def sampled_entry(entry: Mapping[str, Any] | None, numel: int,
                  index: torch.Tensor | None) -> Mapping[str, Any] | None:
    """The per-element tensors of one parameter's state at ``index``; scalars unchanged."""
    if entry is None or index is None:
        return entry
    return {k: v.reshape(-1)[index] if isinstance(v, torch.Tensor) and v.numel() == numel
            and v.dim() > 0 else v for k, v in entry.items()}


def finite(t: torch.Tensor) -> bool:
    """Every element is finite. Through the min and max (NaN propagates to both): one pass and
    no mask, a twentieth of ``isfinite(t).all()`` on a large tensor."""
    if not t.is_floating_point() or not t.numel():
        return True  # integers are always finite
    lo, hi = torch.aminmax(t.detach())
    return math.isfinite(float(lo)) and math.isfinite(float(hi))


def saved_finite(sd: Mapping[str, Any]) -> bool:
    """Every tensor of the saved state is finite (the sampled run sees only part of it)."""
    return all(finite(v) for entry in sd["state"].values() if isinstance(entry, Mapping)
               for v in entry.values() if isinstance(v, torch.Tensor))


class ObservedRecorder(NoiseRecorder):
    """A NoiseRecorder fed by observed steps, each tensor weighted by its saved numel.

    Instead of a noise hook called per tensor (which takes the optimizer off its fast path and
    reads three figures per tensor), :meth:`arm` has the next step show its norms through
    ``observe_next_step``: one row per param group, ``||x||`` and ``||xi||`` of each tensor, the
    same draws and arithmetic as an unobserved step. The figures are the hook's: per tensor
    ``||xi|| / ||x||`` and the noise RMS ``||xi|| / sqrt(numel)``, of noisy groups only.
    """

    def __init__(self, optimizer, numels: Mapping[int, int]) -> None:
        super().__init__(optimizer)
        self._numels = numels

    def __enter__(self) -> "ObservedRecorder":
        return self  # no hook: each step is armed

    def arm(self) -> None:
        """Record the next step."""
        self._current = None
        self.optimizer.observe_next_step(self._on_row)

    def _on_row(self, batch, row) -> None:
        if not is_noisy(batch):  # no noise in this group: nothing the hook would have seen
            return
        values = row if isinstance(row, list) else row.tolist()
        n = len(batch.params)
        if self._current is None:
            self._current = StepRecord()
            self.steps.append(self._current)
        for p, x, xi in zip(batch.params, values[:n], values[n:2 * n]):
            self._current.ratios.append(xi / x if x else (0.0 if xi == 0.0 else math.inf))
            self._current.numels.append(self._numels.get(id(p), p.numel()))
            self._current.noise_rms.append(xi / math.sqrt(max(p.numel(), 1)))


class WholeTensorStats:
    """Draws of one whole tensor's gradient ``(M, Q)`` for ``g = mu + sd * z``, z ~ N(0, 1)."""

    def __init__(self, mu: torch.Tensor | None, sd: torch.Tensor | None, numel: int) -> None:
        mu = torch.zeros(1) if mu is None else mu.double().reshape(-1)
        sd = torch.ones(1) if sd is None else sd.double().reshape(-1)
        mu, sd = (t.expand(numel) if t.numel() == 1 else t for t in (mu, sd))
        self._sums(mu, sd.square(), numel)

    @classmethod
    def of_variance(cls, mu: torch.Tensor, var: torch.Tensor, numel: int) -> "WholeTensorStats":
        """From float64 per-element means and variances (``sd ** 2``), as they are."""
        stats = cls.__new__(cls)
        stats._sums(mu.reshape(-1), var.reshape(-1), numel)
        return stats

    def _sums(self, mu: torch.Tensor, s2: torch.Tensor, numel: int) -> None:
        mu_s2 = mu * s2
        self.n = float(numel)
        self.sum_mu, self.sum_mu2 = float(mu.sum()), float(mu.dot(mu))
        self.var_a = float(s2.sum())  # a = sum(sd z); b = sum(mu sd^2 z / sd) = sum(mu sd z)
        self.cov_ab = float(mu_s2.sum())
        self.var_b = float(mu_s2.dot(mu))
        self.sd_q = math.sqrt(2.0 * float(s2.dot(s2)))  # q = sum(sd^2 z^2)

    def draw(self, gen: torch.Generator) -> torch.Tensor:
        """``[M - D, M + D]``: the whole tensor's mean and mean square, D = sqrt(Q - M^2)."""
        x1, x2, x3 = torch.randn(3, generator=gen, dtype=torch.float64).tolist()
        a = math.sqrt(self.var_a) * x1
        slope = self.cov_ab / self.var_a if self.var_a else 0.0
        b = slope * a + math.sqrt(max(self.var_b - slope * self.cov_ab, 0.0)) * x2
        q = self.var_a + self.sd_q * x3
        m = (self.sum_mu + a) / self.n
        spread = math.sqrt(max((self.sum_mu2 + 2.0 * b + q) / self.n - m * m, 0.0))
        return torch.tensor([m - spread, m + spread])


def relative_error(sample: int, steps: int) -> float:
    """Relative standard error of one tensor's K-step ratio estimate (Gaussian noise)."""
    return 1.0 / math.sqrt(2.0 * sample * steps) if sample else 0.0
