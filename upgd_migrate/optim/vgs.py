"""Variance Gradient Scaler (VGS) v3.2, and a loader for every legacy VGS state layout.

VGS multiplies all gradients by one scalar ``c`` that shrinks when per-tensor gradient noise
(variance relative to the squared mean) is high. Call order in training, as in the reference:
``backward -> scale_gradients -> clip_grad_norm_ -> optimizer.step -> step``. ``step()`` therefore
reads gradients *after* they were scaled: the statistics are those of scaled gradients. That is
how the reference call order works, and the saved statistics of every version mean exactly that.
"""
from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Iterable
from typing import Any

import torch

from upgd_migrate.optim import _dist

VGS_VERSION = "3.2"
STATE_FORMAT = 1
LEGACY_KEY = "legacy_statistics"
# EMA updates since the per-parameter statistics were last (re)started. Bias correction divides
# by 1 - beta**this, not by 1 - beta**step_count: after a legacy load resets the statistics but
# keeps step_count (so warmup is not re-applied), correcting by step_count would read the
# nearly empty EMAs as settled and collapse the factor for hundreds of steps.
STATISTICS_COUNT_KEY = "statistics_step_count"
GLOBAL_KEYS = ("grad_mean_ema", "grad_var_ema", "grad_norm_ema", "grad_max_ema")
TENSOR_KEYS = ("param_grad_mean_ema", "param_grad_sq_ema", "param_numel")
COMPATIBLE_VERSIONS = frozenset({"3.1", "3.2"})
# Same key names as 3.1, different statistics: never fed to today's algorithm (DOMAIN.md 6).
LEGACY_MEANINGS = {
    "2.0": "EMA of E|g| / EMA of Var(g)",
    "3.0": "EMA of mean(g) / EMA of mean(g)^2",
}
_HYPER_KEYS = ("enabled", "beta", "alpha", "eps", "warmup_steps")
_V32_KEYS = ("min_scaling_factor", "variance_cap")
_KNOWN_KEYS = frozenset(
    _HYPER_KEYS + _V32_KEYS + GLOBAL_KEYS + TENSOR_KEYS
    + ("step_count", STATISTICS_COUNT_KEY, "vgs_version", "upgd_migrate_format", LEGACY_KEY)
)
_MEAN_SQ_FLOOR = 1e-12
_NV_CLIP = 1e6
_QUANTILE = 0.9


def _copy(value: Any) -> Any:
    """An independent copy; tensors keep dtype, shape and bits."""
    return value.detach().clone() if isinstance(value, torch.Tensor) else copy.deepcopy(value)


class LegacyVGSStateWarning(UserWarning):
    """A legacy VGS state was loaded whose statistics today's algorithm cannot use."""


def _collect_params(parameters: Any) -> list[torch.Tensor]:
    """Flatten tensors or param-group dicts into one list; its order is the on-disk layout."""
    if isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    params: list[torch.Tensor] = []
    for item in parameters:
        if isinstance(item, dict):
            group = item["params"]
            params.extend([group] if isinstance(group, torch.Tensor) else group)
        else:
            params.append(item)
    if not params:
        raise ValueError("VarianceGradientScaler got an empty parameter list")
    if len({id(p) for p in params}) != len(params):
        # A repeated tensor would be scaled twice (c**2) by scale_gradients.
        raise ValueError("some parameters appear more than once in the VGS parameter list")
    return params


def _validate(beta: float, alpha: float, eps: float, warmup_steps: int,
              min_scaling_factor: float, variance_cap: float | None) -> None:
    """Refuse values that make c undefined or meaningless, in torch.optim's message style."""
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"Invalid beta value: {beta}")
    if not (alpha >= 0.0 and math.isfinite(alpha)):
        raise ValueError(f"Invalid alpha value: {alpha}")
    if not (eps >= 0.0 and math.isfinite(eps)):
        raise ValueError(f"Invalid epsilon value: {eps}")
    if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
        raise ValueError(f"Invalid warmup_steps value: {warmup_steps}")
    if not 0.0 <= min_scaling_factor <= 1.0:
        raise ValueError(f"Invalid min_scaling_factor value: {min_scaling_factor}")
    if variance_cap is not None and not variance_cap >= 0.0:
        raise ValueError(f"Invalid variance_cap value: {variance_cap}")


class VarianceGradientScaler:
    """Scale all gradients by one factor that falls as per-tensor gradient noise rises (VGS v3.2).

    When ``enabled`` is False the factor is always 1 and gradients are untouched, but ``step()``
    still counts and still updates the statistics, so the bias correction (which assumes every
    counted step updated the EMAs) stays right if the scaler is enabled later.
    """

    def __init__(self, parameters: Iterable[Any], enabled: bool = True, beta: float = 0.99,
                 alpha: float = 0.1, eps: float = 1e-8, warmup_steps: int = 100,
                 min_scaling_factor: float = 0.1, variance_cap: float | None = 50.0) -> None:
        _validate(beta, alpha, eps, warmup_steps, min_scaling_factor, variance_cap)
        self.params = _collect_params(parameters)
        self.enabled = bool(enabled)
        self.beta, self.alpha, self.eps = beta, alpha, eps
        self.warmup_steps = warmup_steps
        self.min_scaling_factor, self.variance_cap = min_scaling_factor, variance_cap
        self.step_count = 0
        self.statistics_step_count = 0
        self.global_statistics: dict[str, float | None] = dict.fromkeys(GLOBAL_KEYS)
        self.legacy_statistics: dict[str, Any] | None = None
        self.extra_state: dict[str, Any] = {}
        self._reset_statistics()

    def _reset_statistics(self) -> None:
        """Zero EMAs on the first parameter's device; float32 is the on-disk layout."""
        device = self.params[0].device
        n = len(self.params)
        self.param_grad_mean_ema = torch.zeros(n, dtype=torch.float32, device=device)
        self.param_grad_sq_ema = torch.zeros(n, dtype=torch.float32, device=device)
        numel = [float(p.numel()) for p in self.params]
        self.param_numel = torch.tensor(numel, dtype=torch.float32, device=device)

    def _normalised_variances(self) -> torch.Tensor:
        """Per-tensor nv in float64; NaN marks tensors without statistics (nanquantile skips it)."""
        correction = 1.0 - self.beta ** self.statistics_step_count
        mean = self.param_grad_mean_ema.double() / correction
        sq = self.param_grad_sq_ema.double() / correction
        var = (sq - mean.square()).clamp_min(0.0)
        nv = var / (mean.square().clamp_min(_MEAN_SQ_FLOOR) + self.eps)
        nv = torch.where(torch.isfinite(nv), nv, torch.zeros_like(nv))
        # A tensor that never had a nonzero gradient carries no information about noise.
        has_stats = (self.param_grad_mean_ema != 0) | (self.param_grad_sq_ema != 0)
        return torch.where(has_stats, nv, torch.full_like(nv, math.nan))

    def get_scaling_factor(self) -> float:
        """Return c; one host sync (the final ``item``), everything before it stays on device."""
        if (not self.enabled or self.step_count < self.warmup_steps
                or self.statistics_step_count == 0):
            return 1.0
        nv = torch.nanquantile(self._normalised_variances(), _QUANTILE, interpolation="linear")
        nv = torch.nan_to_num(nv, nan=0.0).clamp(0.0, _NV_CLIP)  # all-NaN: no statistics yet
        if self.variance_cap is not None:
            nv = nv.clamp_max(self.variance_cap)
        c = (1.0 / (1.0 + self.alpha * nv)).clamp(self.min_scaling_factor, 1.0)
        return float(c.item())

    @torch.no_grad()
    def scale_gradients(self) -> float:
        """Multiply every existing gradient by the same c and return c."""
        c = self.get_scaling_factor()
        if c != 1.0:
            for p in self.params:
                if p.grad is not None:
                    p.grad.mul_(c)
        return c

    @torch.no_grad()
    def step(self) -> None:
        """Count the step, then fold the current (already scaled) gradients into the EMAs."""
        self.step_count += 1
        index, grads = [], []
        device = self.param_grad_mean_ema.device
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue  # its EMA stays untouched
            if p.grad.is_sparse:
                raise RuntimeError("VarianceGradientScaler does not support sparse gradients")
            index.append(i)
            grads.append(p.grad)
        if not index:
            return
        # Whole-tensor statistics, also for FSDP2 shards (one collective), so c is one value
        # on every rank.
        means, sqs = _dist.grad_moments(grads, device)
        self.statistics_step_count += 1
        idx = torch.tensor(index, device=device)
        for ema, new in ((self.param_grad_mean_ema, means), (self.param_grad_sq_ema, sqs)):
            ema[idx] = self.beta * ema[idx] + (1.0 - self.beta) * torch.stack(new)

    def state_dict(self) -> dict[str, Any]:
        """The v3.2 layout (plain scalars, None, str, tensors: loadable with weights_only=True)."""
        state: dict[str, Any] = {k: getattr(self, k) for k in _HYPER_KEYS}
        state["step_count"] = self.step_count
        state[STATISTICS_COUNT_KEY] = self.statistics_step_count
        state.update(self.global_statistics)
        for key in TENSOR_KEYS:
            state[key] = getattr(self, key).clone()
        state.update(vgs_version=VGS_VERSION, min_scaling_factor=self.min_scaling_factor,
                     variance_cap=self.variance_cap, upgd_migrate_format=STATE_FORMAT)
        if self.legacy_statistics is not None:
            state[LEGACY_KEY] = copy.deepcopy(self.legacy_statistics)
        state.update(copy.deepcopy(self.extra_state))
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load any VGS state (v1, 2.0, 3.0, 3.1, 3.2); nothing in it is silently dropped."""
        sd = dict(state_dict)
        missing = [k for k in (*_HYPER_KEYS, "step_count") if k not in sd]
        if missing:
            raise ValueError(f"VGS state lacks required keys {missing}")
        version = str(sd["vgs_version"]) if "vgs_version" in sd else "1"
        if version not in COMPATIBLE_VERSIONS and version not in LEGACY_MEANINGS and version != "1":
            raise ValueError(f"Unsupported VGS state version {version!r} "
                             "(supported: v1, 2.0, 3.0, 3.1, 3.2)")
        fmt = sd.get("upgd_migrate_format", STATE_FORMAT)
        if fmt > STATE_FORMAT:
            raise ValueError(f"VGS state has upgd_migrate_format {fmt}; this version reads "
                             f"up to {STATE_FORMAT}: upgrade upgd-migrate")
        saved = self._saved_statistics(sd)
        if version in COMPATIBLE_VERSIONS and not saved:
            raise ValueError(f"VGS state version {version} lacks its per-parameter statistics "
                             f"{list(TENSOR_KEYS)}")
        self._load_hyperparameters(sd)
        self.global_statistics = {k: sd.get(k) for k in GLOBAL_KEYS}
        self.legacy_statistics = copy.deepcopy(sd.get(LEGACY_KEY))
        self.extra_state = copy.deepcopy({k: v for k, v in sd.items() if k not in _KNOWN_KEYS})
        self._reset_statistics()
        if version in COMPATIBLE_VERSIONS:
            for key, value in saved.items():
                setattr(self, key, value)
            # Older states counted their statistics by step_count alone.
            self.statistics_step_count = int(sd.get(STATISTICS_COUNT_KEY, self.step_count))
        else:
            self.statistics_step_count = 0
            self._keep_legacy(version, sd)

    def _load_hyperparameters(self, sd: dict[str, Any]) -> None:
        """Saved hyperparameters win (as in torch.optim); v3.2-only ones default to ours."""
        values = {k: sd[k] for k in _HYPER_KEYS}
        msf = sd.get("min_scaling_factor", self.min_scaling_factor)
        cap = sd.get("variance_cap", self.variance_cap)
        _validate(values["beta"], values["alpha"], values["eps"], values["warmup_steps"], msf, cap)
        self.enabled = bool(values["enabled"])
        self.beta, self.alpha, self.eps = values["beta"], values["alpha"], values["eps"]
        self.warmup_steps = values["warmup_steps"]
        self.min_scaling_factor, self.variance_cap = msf, cap
        self.step_count = int(sd["step_count"])

    def _saved_statistics(self, sd: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Copy the per-parameter tensors onto our device, refusing a different parameter count."""
        present = [k for k in TENSOR_KEYS if k in sd]
        if not present:
            return {}
        if len(present) != len(TENSOR_KEYS):
            raise ValueError(f"VGS state has {present} but not all of {list(TENSOR_KEYS)}")
        device, n = self.params[0].device, len(self.params)
        saved = {}
        for key in TENSOR_KEYS:
            value = torch.as_tensor(sd[key]).detach()
            saved[key] = value.to(device=device, dtype=torch.float32, copy=True).reshape(-1)
            if saved[key].numel() != n:
                raise ValueError(f"VGS state holds {saved[key].numel()} saved entries in {key!r} "
                                 f"but this scaler has {n} parameters: the state belongs to a "
                                 "different model or parameter order")
        # Same count but other sizes: the statistics would land on the wrong tensors.
        ours, theirs = self.param_numel.cpu(), saved["param_numel"].cpu()
        wrong = ((theirs != ours) & (theirs != 0)).nonzero().flatten().tolist()
        if wrong:
            i = wrong[0]
            raise ValueError(f"VGS state param_numel[{i}] is {theirs[i].item():g} but parameter "
                             f"{i} has {ours[i].item():g} elements: the state belongs to a "
                             "different model or parameter order")
        return saved

    def _keep_legacy(self, version: str, sd: dict[str, Any]) -> None:
        """Keep statistics we cannot use under LEGACY_KEY and say so; live ones stay zero."""
        if version == "1":
            message = ("VGS v1 state has no per-parameter statistics: live statistics start at "
                       f"zero; its global statistics {list(GLOBAL_KEYS)} are kept as loaded")
        else:
            meaning = LEGACY_MEANINGS[version]
            self.legacy_statistics = {"vgs_version": version, "meaning": meaning}
            self.legacy_statistics.update({k: _copy(sd[k]) for k in TENSOR_KEYS if k in sd})
            message = (f"VGS state version {version} holds incompatible per-parameter statistics "
                       f"({meaning}): live statistics were reset to zero and the old ones kept "
                       f"under {LEGACY_KEY!r}")
        warnings.warn(f"{message}; step_count {self.step_count} was preserved, so warmup is not "
                      "re-applied, and the new statistics are bias-corrected from their own start",
                      LegacyVGSStateWarning, stacklevel=3)
