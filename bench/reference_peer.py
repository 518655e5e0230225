"""The peer being replaced: a per-tensor-loop AdaptiveUPGD written from the formulas of
docs/optimizers.md, the way the reference code runs them.

It keeps the reference's costs on purpose: a Python loop over tensors with fresh temporaries,
the utility min/max brought to the host with ``.item()`` per tensor, a per-tensor
``randn_like``, and on the adaptive path a per-tensor ``.norm().item()`` feeding the seed's
``sigma * ||g||`` EMA. Only the benchmark uses it; it is not part of the package.
"""
from __future__ import annotations

import math

import torch
from torch.optim import Optimizer


class ReferenceAdaptiveUPGD(Optimizer):
    def __init__(self, params, lr=1e-5, weight_decay=0.001, beta_utility=0.999, sigma=0.001,
                 beta1=0.9, beta2=0.999, eps=1e-8, adaptive_noise=False, noise_beta=0.999,
                 min_noise_std=1e-6):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, beta_utility=beta_utility,
                                      sigma=sigma, beta1=beta1, beta2=beta2, eps=eps,
                                      adaptive_noise=adaptive_noise, noise_beta=noise_beta,
                                      min_noise_std=min_noise_std))

    @torch.no_grad()
    def step(self, closure=None):
        global_min, global_max = math.inf, -math.inf
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["avg_utility"] = torch.zeros_like(p)
                    state["first_moment"] = torch.zeros_like(p)
                    state["sec_moment"] = torch.zeros_like(p)
                    if group["adaptive_noise"]:
                        state["grad_norm_ema"] = 1.0
                state["step"] += 1
                b = group["beta_utility"]
                state["avg_utility"].mul_(b).add_(-p.grad * p, alpha=1 - b)
                u_hat = state["avg_utility"] / (1 - b ** state["step"])
                global_min = min(global_min, u_hat.min().item())
                global_max = max(global_max, u_hat.max().item())
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state, g = self.state[p], p.grad
                t, b1, b2 = state["step"], group["beta1"], group["beta2"]
                m, v = state["first_moment"], state["sec_moment"]
                m.mul_(b1).add_(g, alpha=1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                d = (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + group["eps"])
                if group["adaptive_noise"]:
                    nb = group["noise_beta"]
                    state["grad_norm_ema"] = nb * state["grad_norm_ema"] + (1 - nb) * g.norm().item()
                    std = max(group["sigma"] * state["grad_norm_ema"] / (1 - nb**t),
                              group["min_noise_std"])
                else:
                    std = group["sigma"]
                noise = torch.randn_like(g) * std
                u_hat = state["avg_utility"] / (1 - group["beta_utility"] ** t)
                n = ((u_hat - global_min) / (global_max - global_min + 1e-8)).clamp(0, 1)
                scaled = torch.sigmoid(2 * (n - 0.5))
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_((d + noise) * (1 - scaled), alpha=-group["lr"])
