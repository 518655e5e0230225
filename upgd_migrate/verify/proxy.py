"""The proxy parameters verify drives, and their gradients, made once per optimizer state.

Every scenario of a state (unscaled, x0.5, x0.1, VGS) starts from the same proxy values and
sees the same gradient draws, only scaled: so the proxy (its sampled state, its gradient
statistics) is built once and each scenario gets fresh parameters from it, and the gradients
of a sampled proxy are drawn once and kept for the scenarios after the first. Full-size
proxies draw theirs again per scenario, from the same seed (a model's worth of gradients per
step is not kept in memory).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import torch

from upgd_migrate.verify import sample as S

MOMENTS = {"AdaptiveUPGD": ("first_moment", "sec_moment"), "UPGDW": ("exp_avg", "exp_avg_sq")}
# Gradients kept for reuse: at most this many elements over all steps (64 MiB of float32);
# the default sample needs 4096 x tensors x steps.
KEEP_ELEMENTS = 1 << 24


def betas(group: Mapping[str, Any]) -> tuple[float, float]:
    if "betas" in group:
        return float(group["betas"][0]), float(group["betas"][1])
    return float(group.get("beta1", 0.9)), float(group.get("beta2", 0.999))


def moments(entry: Mapping[str, Any] | None, group: Mapping[str, Any], cls: str):
    """(mean, variance) of the gradient implied by the saved moments, in float64:
    m̂ and max(v̂ - m̂², 0); None without saved moments."""
    keys = MOMENTS.get(cls)
    if not entry or keys is None or keys[0] not in entry or not entry.get("step"):
        return None
    b1, b2 = betas(group)
    t = int(entry["step"])
    # In place on two new float64 tensors: on a large state, allocating (and faulting in) a
    # temporary costs more than the arithmetic.
    m = entry[keys[0]].to(torch.float64, copy=True).div_(1.0 - b1**t)
    v = entry[keys[1]].to(torch.float64, copy=True).div_(1.0 - b2**t)
    return m, v.addcmul_(m, m, value=-1.0).clamp_min_(0.0)


def grad_stats(entry: Mapping[str, Any] | None, group: Mapping[str, Any], cls: str):
    """(mean, std) of the gradient implied by the saved moments: m̂ and sqrt(v̂ - m̂²)."""
    found = moments(entry, group, cls)
    return None if found is None else (found[0].float(), found[1].sqrt_().float())


def shape_of(entry: Mapping[str, Any] | None) -> torch.Size:
    for key in ("avg_utility", "first_moment", "exp_avg"):
        if entry and isinstance(entry.get(key), torch.Tensor):
            return entry[key].shape
    return torch.Size([1])  # a parameter that never stepped: its size was not saved


@dataclass
class Proxy:
    initial: list[torch.Tensor]  # each parameter's starting values, on the device
    group_sizes: list[int]
    stats: list[Any]  # per parameter: (mean, std) of its gradient, or None (unit Gaussian)
    state: dict  # the state to load: per-element tensors at the sampled positions
    numels: list[int]  # per parameter: the saved tensor's numel
    sampled: bool

    def state_copy(self) -> dict:
        """A copy of :attr:`state` to load (stepping mutates the loaded tensors): tensors
        cloned directly, which costs a fraction of ``copy.deepcopy``'s per-tensor protocol."""
        def entry(e):
            if not isinstance(e, Mapping):
                return copy.deepcopy(e)
            return {k: v.clone() if isinstance(v, torch.Tensor) else copy.deepcopy(v)
                    for k, v in e.items()}
        return {"state": {pid: entry(e) for pid, e in self.state["state"].items()},
                "param_groups": copy.deepcopy(self.state["param_groups"])}

    def fresh(self) -> tuple[list[torch.nn.Parameter], list[list[torch.nn.Parameter]]]:
        """New parameters at the starting values (a scenario steps them in place), and the
        same parameters by group."""
        params = [torch.nn.Parameter(t.clone()) for t in self.initial]
        groups, start = [], 0
        for n in self.group_sizes:
            groups.append(params[start:start + n])
            start += n
        return params, groups


def build(sd: Mapping[str, Any], cls: str, seed: int, device: torch.device,
          sample: int = 0) -> Proxy:
    # Drawn on the CPU and moved: every device starts from the same proxy values.
    gen, pick = torch.Generator().manual_seed(seed + 1), torch.Generator().manual_seed(seed + 2)
    proxy = Proxy([], [], [], {"state": dict(sd["state"]), "param_groups": sd["param_groups"]},
                  [], False)
    for g in sd["param_groups"]:
        for pid in g["params"]:
            entry, shape = sd["state"].get(pid), shape_of(sd["state"].get(pid))
            index = S.indices(math.prod(shape), sample, pick)
            proxy.initial.append((torch.randn(shape if index is None else index.shape,
                                              generator=gen) * 0.1).to(device))
            if index is not None:
                entry = proxy.state["state"][pid] = S.sampled_entry(entry, math.prod(shape),
                                                                    index)
                proxy.sampled = True
            proxy.numels.append(math.prod(shape))
            st = grad_stats(entry, g, cls)
            proxy.stats.append(None if st is None else (st[0].to(device), st[1].to(device)))
        proxy.group_sizes.append(len(g["params"]))
    return proxy


class Gradients:
    """Each step's unscaled proxy gradients, ``mean + std * z`` with ``z`` drawn from ``seed``:
    the same for every scenario. The tensors handed out are shared: scale them into new ones,
    never in place."""

    def __init__(self, proxy: Proxy, seed: int, steps: int) -> None:
        self.proxy, self.seed, self.steps = proxy, seed, steps
        self.keep = sum(t.numel() for t in proxy.initial) * steps <= KEEP_ELEMENTS
        self._kept: list[list[torch.Tensor]] = []

    def each_step(self) -> Iterator[list[torch.Tensor]]:
        if self._kept:
            yield from self._kept
            return
        gen, kept = torch.Generator().manual_seed(self.seed), []
        for _ in range(self.steps):
            grads = self._draw(gen)
            if self.keep:
                kept.append(grads)
            yield grads
        if self.keep:  # only once every step was drawn: a partial list would be wrong
            self._kept = kept

    def _draw(self, gen: torch.Generator) -> list[torch.Tensor]:
        out = []
        for p, st in zip(self.proxy.initial, self.proxy.stats):
            z = torch.randn(p.shape, generator=gen).to(p.device)
            out.append(z if st is None else st[0] + st[1] * z)
        return out
