"""Stand-ins for the reference code's classes, under the reference's module names, so a trainer
run writes the zip the reference trainer writes: ``data`` cloudpickles the scaler by the name
``variance_gradient_scaler.VarianceGradientScaler`` with the reference's attribute layout, and the
policy's optimizer class by ``optimizers.adaptive_upgd.AdaptiveUPGD``.

``ReferenceLayoutVGS`` is a small independent implementation of the reference VGS 3.2 that holds
exactly its attributes (``_parameters``, ``_step_count``, ``_param_grad_mean_ema``, float global
EMAs, ...) and pickles them as it does (without ``_parameters`` and ``_logger``). The optimizer
stand-in is the packaged AdaptiveUPGD under the reference's name (the reference's optimizer state
layouts are covered by tests/optim/test_reference_states.py).

``installed(...)`` puts the stand-ins (or, for a load "with our classes swapped in", the packaged
classes) under those module names for the duration of a ``with`` block.
"""
from __future__ import annotations

import contextlib
import sys
import types

import torch

from upgd_migrate.optim import AdaptiveUPGD

VGS_MODULE, OPTIM_MODULE = "variance_gradient_scaler", "optimizers.adaptive_upgd"


class ReferenceLayoutVGS:
    def __init__(self, parameters=None, enabled=True, beta=0.99, alpha=0.1, eps=1e-8,
                 warmup_steps=100, track_per_param=False, logger=None, min_scaling_factor=0.1,
                 variance_cap=50.0):
        self.enabled, self.beta, self.alpha, self.eps = enabled, beta, alpha, eps
        self.warmup_steps, self.track_per_param, self._logger = warmup_steps, True, logger
        self.min_scaling_factor, self.variance_cap = min_scaling_factor, variance_cap
        self._step_count = 0
        self._param_grad_mean_ema = self._param_grad_sq_ema = self._param_numel = None
        self._param_ids: dict = {}
        self._grad_mean_ema = self._grad_var_ema = self._grad_norm_ema = self._grad_max_ema = None
        self._param_stats: dict = {}
        self._parameters = None if parameters is None else list(parameters)

    def update_parameters(self, parameters) -> None:
        self._parameters = list(parameters)
        self._param_grad_mean_ema = self._param_grad_sq_ema = self._param_numel = None
        self._param_ids = {}

    @torch.no_grad()
    def scale_gradients(self) -> float:
        if self._parameters is None:
            return 1.0
        c = self._factor()
        for p in self._parameters:
            if c < 1.0 and p.grad is not None:
                p.grad.mul_(c)
        return c

    def _factor(self) -> float:
        if (not self.enabled or self._step_count < self.warmup_steps
                or self._param_grad_mean_ema is None):
            return 1.0
        bc = 1.0 - self.beta ** self._step_count
        m, s = self._param_grad_mean_ema / bc, self._param_grad_sq_ema / bc
        nv = (s - m * m).clamp(min=0.0) / (m.abs().pow(2).clamp(min=1e-12) + self.eps)
        nv = torch.where(torch.isfinite(nv), nv, torch.zeros_like(nv))
        q = min(max(torch.quantile(nv, 0.9).item(), 0.0), 1e6)
        if self.variance_cap is not None:
            q = min(q, self.variance_cap)
        return min(max(1.0 / (1.0 + self.alpha * q), self.min_scaling_factor), 1.0)

    @torch.no_grad()
    def step(self) -> None:
        self._step_count += 1
        if not self._parameters:
            return
        if self._param_grad_mean_ema is None:
            n = len(self._parameters)
            self._param_grad_mean_ema, self._param_grad_sq_ema = torch.zeros(n), torch.zeros(n)
            self._param_numel = torch.tensor([float(p.numel()) for p in self._parameters])
        grads = [(i, p.grad) for i, p in enumerate(self._parameters) if p.grad is not None]
        for i, g in grads:
            self._param_grad_mean_ema[i] = self.beta * self._param_grad_mean_ema[i] + (
                1 - self.beta) * g.mean().item()
            self._param_grad_sq_ema[i] = self.beta * self._param_grad_sq_ema[i] + (
                1 - self.beta) * g.square().mean().item()
        if grads:
            flat = torch.cat([g.abs().flatten() for _, g in grads])
            now = [flat.mean().item(), flat.var().item(), flat.norm().item(), flat.max().item()]
            names = ("_grad_mean_ema", "_grad_var_ema", "_grad_norm_ema", "_grad_max_ema")
            for name, value in zip(names, now):
                old = getattr(self, name)
                setattr(self, name, value if old is None else
                        self.beta * old + (1 - self.beta) * value)

    def state_dict(self) -> dict:
        return {"enabled": self.enabled, "beta": self.beta, "alpha": self.alpha, "eps": self.eps,
                "warmup_steps": self.warmup_steps, "step_count": self._step_count,
                "min_scaling_factor": self.min_scaling_factor, "variance_cap": self.variance_cap,
                "param_grad_mean_ema": self._param_grad_mean_ema,
                "param_grad_sq_ema": self._param_grad_sq_ema, "param_numel": self._param_numel,
                "grad_mean_ema": self._grad_mean_ema, "grad_var_ema": self._grad_var_ema,
                "grad_norm_ema": self._grad_norm_ema, "grad_max_ema": self._grad_max_ema,
                "vgs_version": "3.2"}

    def load_state_dict(self, sd: dict) -> None:
        self._step_count = sd.get("step_count", 0)
        for key in ("param_grad_mean_ema", "param_grad_sq_ema", "param_numel", "grad_mean_ema",
                    "grad_var_ema", "grad_norm_ema", "grad_max_ema"):
            setattr(self, f"_{key}", sd.get(key))

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.pop("_logger", None)
        state.pop("_parameters", None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._logger = None
        self._parameters = None


class ReferenceLayoutAdaptiveUPGD(AdaptiveUPGD):
    pass


ReferenceLayoutVGS.__module__, ReferenceLayoutVGS.__qualname__ = VGS_MODULE, \
    "VarianceGradientScaler"
ReferenceLayoutAdaptiveUPGD.__module__, ReferenceLayoutAdaptiveUPGD.__qualname__ = \
    OPTIM_MODULE, "AdaptiveUPGD"


@contextlib.contextmanager
def installed(vgs_class: type, optimizer_class: type):
    """``variance_gradient_scaler.VarianceGradientScaler`` and
    ``optimizers.adaptive_upgd.AdaptiveUPGD`` resolve to these classes inside the block."""
    saved = {name: sys.modules.get(name) for name in ("optimizers", OPTIM_MODULE, VGS_MODULE)}
    vgs_module, package = types.ModuleType(VGS_MODULE), types.ModuleType("optimizers")
    optim_module = types.ModuleType(OPTIM_MODULE)
    vgs_module.VarianceGradientScaler = vgs_class
    optim_module.AdaptiveUPGD = optimizer_class
    package.adaptive_upgd = optim_module
    sys.modules.update({VGS_MODULE: vgs_module, "optimizers": package,
                        OPTIM_MODULE: optim_module})
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
