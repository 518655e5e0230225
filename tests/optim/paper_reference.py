"""The UPGD paper's update, written here from its formulas (float64), to measure the package by.

The paper's code (github.com/mohmdelsayed/upgd) has three classes of one rule. With ``t`` the step,
``u <- b_u*u + (1-b_u)*(-g*p)`` the utility trace and ``M`` the largest entry of ``u`` over every
tensor of every group (the raw trace, not the bias-corrected one):

    s = sigmoid((u / (1 - b_u**t)) / M)
    p <- p*(1 - lr*wd) - factor*lr*(x + xi)*(1 - s)

``x`` is the gradient (``UPGD`` in its README, ``FirstOrderGlobalUPGD`` in
core/optim/weight_upgd/first_order.py) or the Adam direction ``m̂/(sqrt(v̂)+eps)`` (``AdaptiveUPGD``
in core/run/rl/adaupgd.py, whose ``eps`` defaults to 1e-5); ``xi`` is Gaussian noise of std
``sigma``; ``factor`` is 2 for the README class and the AdaptiveUPGD, 1 for FirstOrderGlobalUPGD.
Nothing here fixes the rule's edge cases: they are what the tests measure.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor


@dataclass
class PaperRule:
    lr: float
    weight_decay: float = 0.001
    beta_utility: float = 0.999
    sigma: float = 0.0
    factor: float = 2.0
    adam: bool = False
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-5


class PaperUPGD:
    """One optimizer of the paper's rule over ``params`` (tensors whose ``.grad`` is set)."""

    def __init__(self, params: list[Tensor], rule: PaperRule) -> None:
        self.params, self.rule, self.t = list(params), rule, 0
        self.u = [torch.zeros_like(p) for p in self.params]
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.last_s: list[Tensor] = []  # this step's s (1 - gate), per tensor

    def _direction(self, i: int) -> Tensor:
        r, g = self.rule, self.params[i].grad
        if not r.adam:
            return g
        self.m[i] = r.beta1 * self.m[i] + (1.0 - r.beta1) * g
        self.v[i] = r.beta2 * self.v[i] + (1.0 - r.beta2) * g * g
        m_hat = self.m[i] / (1.0 - r.beta1**self.t)
        v_hat = self.v[i] / (1.0 - r.beta2**self.t)
        return m_hat / (v_hat.sqrt() + r.eps)

    @torch.no_grad()
    def step(self, noise: Optional[list[Tensor]] = None) -> None:
        """One update; ``noise`` (std ``sigma`` already applied) defaults to a fresh draw."""
        r = self.rule
        self.t += 1
        b = r.beta_utility
        self.u = [b * u + (1.0 - b) * (-p.grad * p) for u, p in zip(self.u, self.params)]
        top = torch.stack([u.max() for u in self.u]).max()
        self.last_s = []
        for i, p in enumerate(self.params):
            s = torch.sigmoid((self.u[i] / (1.0 - b**self.t)) / top)
            self.last_s.append(s)
            xi = noise[i] if noise is not None else torch.randn_like(p) * r.sigma
            p.mul_(1.0 - r.lr * r.weight_decay)
            p.sub_(r.factor * r.lr * (self._direction(i) + xi) * (1.0 - s))


# ------------------------------------------------------------------ the measuring problem


def problem(seed: int) -> tuple[list[Tensor], Callable[[list[Tensor]], None]]:
    """A small tanh regression in float64: its parameters and a function that sets their grads."""
    gen = torch.Generator().manual_seed(seed)

    def draw(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    params = [(draw(16, 6) * 0.5).requires_grad_(), (draw(16) * 0.1).requires_grad_(),
              (draw(1, 16) * 0.5).requires_grad_(), (draw(1) * 0.1).requires_grad_()]
    inputs, targets = draw(32, 6), draw(32, 1)

    def set_grads(ps: list[Tensor]) -> None:
        for p in ps:
            p.grad = None
        hidden = torch.tanh(inputs @ ps[0].T + ps[1])
        ((hidden @ ps[2].T + ps[3] - targets) ** 2).mean().backward()
    return params, set_grads


def clone(params: list[Tensor]) -> list[Tensor]:
    return [p.detach().clone().requires_grad_() for p in params]


def run(params: list[Tensor], set_grads: Callable[[list[Tensor]], None],
        step: Callable[[], None], steps: int) -> list[Tensor]:
    for _ in range(steps):
        set_grads(params)
        step()
    return params


def max_difference(a: list[Tensor], b: list[Tensor]) -> float:
    return max(float((x - y).detach().abs().max()) for x, y in zip(a, b))
