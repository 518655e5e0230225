"""Variance Gradient Scaler (VGS) v3.2 with the reference's interface, and a loader for every
legacy VGS state layout (v1, 2.0, 3.0, 3.1, 3.2, and the "no statistics yet" layout of each).

VGS multiplies all gradients by one scalar ``c`` that shrinks when per-tensor gradient noise
(variance relative to the squared mean) is high. Call order in training, as in the reference:
``backward -> scale_gradients -> clip_grad_norm_ -> optimizer.step -> step``. ``step()`` therefore
reads gradients *after* they were scaled: the statistics are those of scaled gradients.

Attribute names are the reference's (``_parameters``, ``_step_count``, ``_param_grad_mean_ema``,
...), so code that reads them, and pickles written by either class, keep working. The reference's
global EMAs (``_grad_mean_ema`` ...) live on the device as one vector and become floats only when
read, saved, pickled or logged: without a logger, ``step()`` never waits for the device.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

import torch

from upgd_migrate.optim import _vgs_load as L
from upgd_migrate.optim._vgs_load import (COMPATIBLE_VERSIONS, GLOBAL_KEYS, LEGACY_KEY,  # noqa: F401
                                          LEGACY_MEANINGS, STATE_FORMAT, STATISTICS_COUNT_KEY,
                                          TENSOR_KEYS, VGS_VERSION, LegacyVGSStateWarning,
                                          has_statistics, version_label)
from upgd_migrate.optim._vgs_stats import step_stats

_MEAN_SQ_FLOOR = 1e-12
_NV_CLIP = 1e6
_QUANTILE = 0.9
_GLOBAL_ATTRS = tuple(f"_{k}" for k in GLOBAL_KEYS)  # the reference's attribute names
_STAT_ATTRS = tuple(f"_{k}" for k in TENSOR_KEYS)
# Never pickled: parameters go stale on load (relinked by update_parameters), loggers rarely
# pickle, the global EMA vector is pickled as the reference's four floats, caches are rebuilt.
_NOT_PICKLED = frozenset({"_parameters", "_logger", "_global_ema", "_index_cache"})


def _global_attr(i: int) -> property:
    def get(self: VarianceGradientScaler) -> float | None:
        return None if self._global_ema is None else float(self._global_ema[i])

    def set_(self: VarianceGradientScaler, value: float | None) -> None:
        values = self._global_floats()
        values[i] = value
        self._set_global(values)
    return property(get, set_)


class VarianceGradientScaler:
    """Scale all gradients by one factor that falls as per-tensor gradient noise rises (VGS v3.2).

    ``parameters=None`` tracks nothing (factor 1) until ``update_parameters``. When ``enabled`` is
    False the factor is 1, but ``step()`` still counts and updates the statistics. With a
    ``logger`` (anything with ``record(key, value)``) each ``step()`` records the ``vgs/*`` keys.
    """

    def __init__(self, parameters: Iterable[Any] | None = None, enabled: bool = True,
                 beta: float = 0.99, alpha: float = 0.1, eps: float = 1e-8,
                 warmup_steps: int = 100, track_per_param: bool = False, logger: Any = None,
                 min_scaling_factor: float = 0.1, variance_cap: float | None = 50.0) -> None:
        L.validate(beta, alpha, eps, warmup_steps, min_scaling_factor, variance_cap, strict=True)
        self.enabled = bool(enabled)
        self.beta, self.alpha, self.eps = float(beta), float(alpha), float(eps)
        self.warmup_steps = int(warmup_steps)
        self.track_per_param = True  # the reference ignores it too: statistics are per tensor
        self.min_scaling_factor = float(min_scaling_factor)
        self.variance_cap = None if variance_cap is None else float(variance_cap)
        self._logger = logger
        self._step_count = 0
        self._parameters = None if parameters is None else L.collect_params(parameters)
        self.__dict__.update(L.fresh_statistics(), _global_ema=None)
        self.legacy_statistics: dict[str, Any] | None = None
        self.extra_state: dict[str, Any] = {}

    _grad_mean_ema, _grad_var_ema, _grad_norm_ema, _grad_max_ema = (
        _global_attr(i) for i in range(4))

    # --- names this package used before it took the reference's ---
    params = property(lambda self: self._parameters)
    statistics_step_count = property(lambda self: self._statistics_step_count)
    param_grad_mean_ema = property(lambda self: self._param_grad_mean_ema)
    param_grad_sq_ema = property(lambda self: self._param_grad_sq_ema)
    param_numel = property(lambda self: self._param_numel)
    global_statistics = property(lambda self: dict(zip(GLOBAL_KEYS, self._global_floats())))

    @property
    def step_count(self) -> int:
        return self._step_count

    @step_count.setter
    def step_count(self, value: int) -> None:
        self._step_count = int(value)

    def _global_floats(self) -> list[float | None]:
        return [None] * 4 if self._global_ema is None else self._global_ema.tolist()

    def _set_global(self, values: list[Any]) -> None:
        device = self._stats_device()
        self._global_ema = L.global_vector(values, device)

    def _stats_device(self) -> torch.device:
        if self._parameters:
            return self._parameters[0].device
        if self._param_grad_mean_ema is not None:
            return self._param_grad_mean_ema.device
        return torch.device("cpu")

    def update_parameters(self, parameters: Iterable[Any]) -> None:
        """Track these parameters; per-parameter statistics restart (as in the reference)."""
        self._parameters = L.collect_params(parameters)
        self.__dict__.update(L.fresh_statistics(), _global_ema=self._global_ema)
        if self._global_ema is not None:
            self._global_ema = self._global_ema.to(self._stats_device())

    def _log(self, key: str, value: Any) -> None:
        record = getattr(self._logger, "record", None)
        if callable(record):
            try:
                record(key, float(value))
            except Exception as e:  # a broken logger must not stop training (as the reference)
                warnings.warn(f"VGS logger.record({key!r}) failed: {e}", RuntimeWarning,
                              stacklevel=3)

    @torch.no_grad()
    def compute_gradient_statistics(self) -> dict[str, float]:
        """This step's grad_norm, grad_mean (of |g|), grad_var (of |g|), grad_max, num_params."""
        stats = None if not self._parameters else step_stats(self._parameters,
                                                             self._stats_device())
        if stats is None:
            return {"grad_norm": 0.0, "grad_mean": 0.0, "grad_var": 0.0, "grad_max": 0.0,
                    "num_params": 0}
        mean, var, norm, top = stats.spatial.tolist()
        return {"grad_norm": norm, "grad_mean": mean, "grad_var": var, "grad_max": top,
                "num_params": len(stats.index)}

    @torch.no_grad()
    def update_statistics(self) -> None:
        """Fold the current gradients into the EMAs (without counting a step)."""
        if not self._parameters:
            return
        device = self._stats_device()
        stats = step_stats(self._parameters, device)  # refuses sparse gradients first
        if self._param_grad_mean_ema is None:  # created even without gradients, as the reference
            self.__dict__.update(L.zero_statistics(self._parameters, device))
        if stats is None:
            return
        idx = None if len(stats.index) == len(self._parameters) else self._index(stats.index)
        b = self.beta
        for ema, new in ((self._param_grad_mean_ema, stats.mean),
                         (self._param_grad_sq_ema, stats.sq)):
            if idx is None:
                ema.mul_(b).add_(new, alpha=1.0 - b)
            else:  # tensors without a gradient keep their EMA untouched
                ema.index_copy_(0, idx, ema.index_select(0, idx).mul_(b).add_(new, alpha=1.0 - b))
        self._statistics_step_count += 1
        if self._global_ema is None:  # initialised with the first value, as the reference
            self._global_ema = stats.spatial
        else:
            self._global_ema = self._global_ema.to(device).mul_(b).add_(stats.spatial,
                                                                        alpha=1.0 - b)

    def _index(self, index: list[int]) -> torch.Tensor:
        """The device index of the tensors with a gradient, cached: no host copy per step."""
        key = tuple(index)
        cached = self.__dict__.get("_index_cache")
        if cached is None or cached[0] != key:
            cached = (key, torch.tensor(index, device=self._param_grad_mean_ema.device))
            self._index_cache = cached
        return cached[1]

    def _per_param_nv(self) -> torch.Tensor | None:
        """Per-tensor normalised variance (float64, on device), or None without statistics.

        Bias-corrected by the statistics' own update count (a documented correction: the
        reference divides by ``1 - beta**step_count``, which reads restarted EMAs as settled).
        """
        if (self._param_grad_mean_ema is None or self._statistics_step_count == 0
                or self._step_count == 0):
            return None
        correction = 1.0 - self.beta ** self._statistics_step_count
        mean = self._param_grad_mean_ema.double() / correction
        sq = self._param_grad_sq_ema.double() / correction
        var = (sq - mean.square()).clamp_min(0.0)
        nv = var / (mean.square().clamp_min(_MEAN_SQ_FLOOR) + self.eps)
        return torch.where(torch.isfinite(nv), nv, torch.zeros_like(nv))

    def _global_nv(self) -> torch.Tensor | None:
        """90th percentile over every tracked tensor (one without a gradient yet counts as 0)."""
        nv = self._per_param_nv()
        if nv is None or nv.numel() == 0:
            return None
        return torch.quantile(nv, _QUANTILE).clamp(0.0, _NV_CLIP)

    @torch.no_grad()
    def get_normalized_variance(self) -> float:
        nv = self._global_nv()
        return 0.0 if nv is None else float(nv)

    def _factor(self) -> torch.Tensor | None:
        """c on device, or None when it is 1 for a reason the host knows (no sync)."""
        if not self.enabled or self._step_count < self.warmup_steps:
            return None
        nv = self._global_nv()
        if nv is None:
            return None
        if self.variance_cap is not None:
            nv = nv.clamp_max(self.variance_cap)
        return (1.0 / (1.0 + self.alpha * nv)).clamp(self.min_scaling_factor, 1.0)

    @torch.no_grad()
    def get_scaling_factor(self) -> float:
        c = self._factor()
        return 1.0 if c is None else float(c)

    @torch.no_grad()
    def scale_gradients(self) -> float:
        """Multiply every existing gradient by the same c and return c (1.0 without parameters)."""
        if not self._parameters:
            return 1.0
        c = self.get_scaling_factor()
        if c < 1.0:
            grads = [p.grad for p in self._parameters if p.grad is not None]
            if grads:
                torch._foreach_mul_(grads, c)
        return c

    @torch.no_grad()
    def step(self) -> None:
        """Count the step, fold the current (already scaled) gradients in, log if a logger."""
        self._step_count += 1
        self.update_statistics()
        if self._logger is not None:
            for key, value in L.log_values(self).items():
                self._log(key, value)

    @torch.no_grad()
    def reset_statistics(self) -> None:
        """Forget every statistic and the step count (warmup starts again)."""
        self._step_count = 0
        self.__dict__.update(L.fresh_statistics(), _global_ema=None)

    def __getstate__(self) -> dict[str, Any]:
        """The reference's attribute layout, without parameters and logger (relinked later)."""
        state = {k: v for k, v in self.__dict__.items() if k not in _NOT_PICKLED}
        state.update(zip(_GLOBAL_ATTRS, self._global_floats()))
        for key in _STAT_ATTRS:  # on the CPU, so the pickle also loads where there is no GPU
            if state.get(key) is not None:
                state[key] = state[key].detach().cpu().clone()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Accept our layout, the reference's (any version) and this package's older one."""
        state = L.reference_layout(state)
        values = [state.pop(k, None) for k in _GLOBAL_ATTRS]
        self.__dict__.update(L.pickle_defaults(state))
        self.__dict__.update(_parameters=None, _logger=None, _global_ema=None)
        self._set_global(values)

    def state_dict(self) -> dict[str, Any]:
        """The v3.2 layout (plain scalars, None, str, tensors: loadable with weights_only=True)."""
        return L.state_dict_of(self)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load any VGS state (v1, 2.0, 3.0, 3.1, 3.2); nothing in it is silently dropped."""
        loaded = L.read_state(state_dict, self)
        self.__dict__.update(loaded.attributes)
        self._set_global(loaded.global_values)
        if loaded.warning:
            warnings.warn(loaded.warning, LegacyVGSStateWarning, stacklevel=2)

    def __repr__(self) -> str:
        return (f"VarianceGradientScaler(enabled={self.enabled}, beta={self.beta}, "
                f"alpha={self.alpha}, eps={self.eps}, warmup_steps={self.warmup_steps}, "
                f"min_scaling_factor={self.min_scaling_factor}, "
                f"variance_cap={self.variance_cap}, step_count={self._step_count}, "
                f"version={VGS_VERSION})")
