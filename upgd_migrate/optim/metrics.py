"""Noise metrics of docs/optimizers.md, measured on a running optimizer.

- noise-to-update ratio ``r = ||xi|| / ||x||`` per tensor, ``x`` being what the noise is added to;
  aggregated over tensors weighted by numel, and over steps as a root mean square (``E[r^2]`` is
  exactly ``sigma^2`` for adaptive noise, so the aggregate has no small-tensor bias);
- amplification ``r(gradients scaled by c) / r(c = 1)`` on the same seeds;
- the seed design's metric (noise std over the global gradient norm), reported only beside the
  honest one and labelled as such.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor


def _scalar(t: Tensor) -> float:
    """A 0-d result as a float; a DTensor's (FSDP2) is reduced over its shards first, so the
    metrics are those of the whole tensor."""
    full = getattr(t, "full_tensor", None)
    return float(full() if full is not None else t)


def noise_to_update_ratio(noise: Tensor, x: Tensor) -> float:
    """``||noise|| / ||x||`` for one tensor (``inf`` when ``x`` is zero and the noise is not).

    DTensors (the noise hook passes FSDP2 shards as DTensors) give the whole tensor's ratio.
    """
    num = _scalar(torch.linalg.vector_norm(noise.detach().double()))
    den = _scalar(torch.linalg.vector_norm(x.detach().double()))
    if den == 0.0:
        return 0.0 if num == 0.0 else math.inf
    return num / den


def amplification(ratio_scaled: float, ratio_base: float) -> float:
    """How much gradient scaling inflated the noise-to-update ratio (1.0: not at all)."""
    return ratio_scaled / ratio_base if ratio_base > 0 else math.inf


def seed_metric(noise_std: float, global_grad_norm: float) -> float:
    """The seed design's "noise-to-signal" (std over the global L2 gradient norm).

    It mixes a per-element std with a whole-model norm, so it shrinks with model size; report it
    only beside :func:`noise_to_update_ratio`, labelled as the seed's metric.
    """
    return noise_std / global_grad_norm if global_grad_norm > 0 else math.inf


@dataclass
class StepRecord:
    ratios: list[float] = field(default_factory=list)
    numels: list[int] = field(default_factory=list)
    noise_rms: list[float] = field(default_factory=list)

    def weighted_ratio(self) -> float:
        total = sum(self.numels)
        return sum(r * n for r, n in zip(self.ratios, self.numels)) / total if total else 0.0


class NoiseRecorder:
    """Record the noise-to-update ratio of every noisy update of an optimizer.

    Use as a context manager around training steps; it registers a noise hook on the optimizer
    (:meth:`register_noise_hook`) and removes it on exit.
    """

    def __init__(self, optimizer) -> None:
        self.optimizer = optimizer
        self.steps: list[StepRecord] = []
        self._handle = None
        self._current: StepRecord | None = None
        self._seen: set[int] = set()

    def __enter__(self) -> "NoiseRecorder":
        self._handle = self.optimizer.register_noise_hook(self._on_noise)
        return self

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _on_noise(self, p: Tensor, x: Tensor, xi: Tensor) -> None:
        # A parameter seen twice means a new optimizer step began.
        if self._current is None or id(p) in self._seen:
            self._current = StepRecord()
            self.steps.append(self._current)
            self._seen = set()
        self._seen.add(id(p))
        self._current.ratios.append(noise_to_update_ratio(xi, x))
        self._current.numels.append(p.numel())
        self._current.noise_rms.append(_scalar(xi.detach().double().pow(2).mean().sqrt()))

    def weighted_ratios(self) -> list[float]:
        """The numel-weighted ratio of each recorded step."""
        return [s.weighted_ratio() for s in self.steps]

    def noise_levels(self) -> list[float]:
        """Each step's noise level: per-element RMS of the noise, over all tensors by numel."""
        return [math.sqrt(sum(r * r * n for r, n in zip(s.noise_rms, s.numels)) / sum(s.numels))
                if sum(s.numels) else 0.0 for s in self.steps]

    def ratio(self, skip: int = 0) -> float:
        """Numel-weighted ratio per step, combined over steps as a root mean square."""
        values = self.weighted_ratios()[skip:]
        if not values:
            raise ValueError("no noisy step was recorded")
        return math.sqrt(sum(v * v for v in values) / len(values))

    def first_step_noise_rms(self) -> float:
        """RMS of the noise of the first recorded step, for spike checks after a resume."""
        if not self.steps:
            raise ValueError("no noisy step was recorded")
        return self.noise_levels()[0]
