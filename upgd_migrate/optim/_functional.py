"""The UPGD family's math, as a single-tensor reference and a multi-tensor (foreach) twin.

Both implementations share every decision that is not arithmetic: which parameters step, how
noise is drawn (:func:`draw_unit_noise`, one ``normal_`` per group into a reused buffer), and
where the per-tensor scalars come from. A test drives both from the same RNG state and checks
they agree, so the fast path can never drift from the readable one.

Notation (DOMAIN.md sections 2 and 3): utility ``u <- b_u*u + (1-b_u)*(-g*p)``, bias-corrected
``û = u/(1-b_u^t)``; gate ``1-s`` with ``s = sigmoid(2(n-0.5))`` and
``n = clamp((û-min)/(max-min+1e-8), 0, 1)``, min and max over every tensor of the optimizer;
``x`` is what the noise is added to (``g`` for the SGD type, the Adam direction ``d`` for the
Adam types); the update is ``p <- p*(1-lr*wd) - lr*(x + xi)*(1-s)``.

Nothing here calls ``.item()`` or compares device tensors in Python: per-tensor norms, the
utility range and the noise scales stay on the device, so a CUDA step never waits on the host.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import Tensor

NoiseHook = Callable[[Tensor, Tensor, Tensor], None]
UTILITY_RANGE_EPS = 1e-8


@dataclass
class GroupBatch:
    """The tensors and hyperparameters of one param group, for the params that have gradients."""

    hp: dict
    params: list[Tensor] = field(default_factory=list)
    grads: list[Tensor] = field(default_factory=list)
    utils: list[Tensor] = field(default_factory=list)
    exp_avgs: list[Tensor] = field(default_factory=list)
    exp_avg_sqs: list[Tensor] = field(default_factory=list)
    noise_emas: list[Tensor] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)  # after this step's increment
    noise_steps: list[int] = field(default_factory=list)  # EMA updates so far, incl. this one

    def utility_inv_bc(self) -> list[float]:
        b = self.hp["beta_utility"]
        return [1.0 / (1.0 - b**t) for t in self.steps]


def draw_unit_noise(batch: GroupBatch, std: float, scratch: dict) -> list[Tensor]:
    """Gaussian noise of the batch's shapes: one ``normal_`` into a reused flat buffer per device.

    Drawing every tensor of a group in one call costs less than one call per tensor and gives
    both implementations the very same numbers.
    """
    views: list[Tensor] = [None] * len(batch.params)  # type: ignore[list-item]
    by_key: dict[tuple, list[int]] = {}
    for i, p in enumerate(batch.params):
        by_key.setdefault((p.device, p.dtype), []).append(i)
    for (device, dtype), idx in by_key.items():
        total = sum(batch.params[i].numel() for i in idx)
        key = ("noise", batch.hp["_index"], device, dtype)
        buf = scratch.get(key)
        if buf is None or buf.numel() != total:
            buf = scratch[key] = torch.empty(total, device=device, dtype=dtype)
        buf.normal_(0.0, std)
        offset = 0
        for i in idx:
            n = batch.params[i].numel()
            views[i] = buf[offset:offset + n].view_as(batch.params[i])
            offset += n
    return views


def noise_scale_coeffs(batch: GroupBatch) -> list[float]:
    """Per-tensor factor turning ``||x||`` into the noise scale: ``1/sqrt(numel)`` (-> rms),
    times the EMA's ``(1-b)/(1-b^k)`` bias correction on the EMA path (applied separately)."""
    return [1.0 / math.sqrt(max(p.numel(), 1)) for p in batch.params]


def _ema_bias_corrections(batch: GroupBatch) -> list[float]:
    nb = batch.hp["noise_beta"]
    return [1.0 / (1.0 - nb**k) for k in batch.noise_steps]


# ---------------------------------------------------------------- single-tensor reference


def single_utility_update(batch: GroupBatch) -> tuple[Tensor, Tensor] | None:
    """Update utility traces; return this group's (min, max) of the bias-corrected utility."""
    b = batch.hp["beta_utility"]
    lows, highs = [], []
    for u, g, p, inv_bc in zip(batch.utils, batch.grads, batch.params, batch.utility_inv_bc()):
        u.mul_(b).add_(-(1.0 - b) * g * p)
        u_hat = u * inv_bc
        lows.append(u_hat.min())
        highs.append(u_hat.max())
    if not lows:
        return None
    return torch.stack(lows).min(), torch.stack(highs).max()


def _single_direction(batch: GroupBatch, i: int) -> Tensor:
    """``x``: the gradient (SGD type) or the bias-corrected Adam direction ``d``."""
    g, hp = batch.grads[i], batch.hp
    if hp["_kind"] == "sgd":
        return g
    b1, b2, eps, t = hp["beta1"], hp["beta2"], hp["eps"], batch.steps[i]
    m, v = batch.exp_avgs[i], batch.exp_avg_sqs[i]
    m.lerp_(g, 1.0 - b1)
    v.mul_(b2).addcmul_(g, g, value=1.0 - b2)
    return (m / (1.0 - b1**t)) / ((v / (1.0 - b2**t)).sqrt() + eps)


def _single_noise_std(batch: GroupBatch, i: int, x: Tensor) -> Tensor | float:
    hp = batch.hp
    if not hp.get("adaptive_noise", False):
        return hp["sigma"]
    rms = x.norm() / math.sqrt(max(x.numel(), 1))
    if not hp["instant_noise_scale"]:
        ema, nb = batch.noise_emas[i], hp["noise_beta"]
        ema.mul_(nb).add_((1.0 - nb) * rms)
        rms = ema / (1.0 - nb ** batch.noise_steps[i])
    return torch.clamp(hp["sigma"] * rms, min=hp["min_noise_std"])


def single_param_update(batch: GroupBatch, lo: Tensor, hi: Tensor, scratch: dict,
                        hook: Optional[NoiseHook]) -> None:
    hp = batch.hp
    adaptive = hp.get("adaptive_noise", False)
    noisy = adaptive or hp["sigma"] != 0.0
    noise = draw_unit_noise(batch, 1.0 if adaptive else hp["sigma"], scratch) if noisy else None
    inv_bcs = batch.utility_inv_bc()
    for i, p in enumerate(batch.params):
        n = ((batch.utils[i] * inv_bcs[i] - lo) / (hi - lo + UTILITY_RANGE_EPS)).clamp(0.0, 1.0)
        gate = 1.0 - torch.sigmoid(2.0 * (n - 0.5))
        x = _single_direction(batch, i)
        xi = None
        if noise is not None:
            std = _single_noise_std(batch, i, x)
            xi = noise[i] * std if adaptive else noise[i]
            if hook is not None:
                hook(p, x, xi)
        update = x + xi if xi is not None else x
        p.mul_(1.0 - hp["lr"] * hp["weight_decay"]).add_(-hp["lr"] * update * gate)


# ---------------------------------------------------------------- multi-tensor (foreach)


def multi_utility_update(batch: GroupBatch) -> tuple[Tensor, Tensor] | None:
    b = batch.hp["beta_utility"]
    torch._foreach_mul_(batch.utils, b)
    torch._foreach_addcmul_(batch.utils, batch.grads, batch.params, value=-(1.0 - b))
    if not batch.utils:
        return None
    pairs = [torch.aminmax(u) for u in batch.utils]
    inv_bcs = batch.utility_inv_bc()
    # û = u * inv_bc with inv_bc > 0, so min/max commute with the bias correction.
    lows = torch._foreach_mul([mn for mn, _ in pairs], inv_bcs)
    highs = torch._foreach_mul([mx for _, mx in pairs], inv_bcs)
    return torch.stack(lows).min(), torch.stack(highs).max()


def _multi_gates(batch: GroupBatch, lo: Tensor, hi: Tensor, scratch: dict) -> list[Tensor]:
    """``1-s = sigmoid(1 - 2n)``, ``n = clamp((û-lo)/(hi-lo+eps), 0, 1)``, into reused buffers.

    ``û - lo`` is formed first from the separately rounded ``û``, exactly as the reference does:
    with equal utilities it is then exactly zero, where folding ``lo`` into an offset would
    leave rounding error that the ``1/(hi-lo+1e-8)`` factor blows up.
    """
    gates = _buffers(scratch, "gate", batch.params)
    for gate, u, inv_bc in zip(gates, batch.utils, batch.utility_inv_bc()):
        torch.mul(u, inv_bc, out=gate)
    torch._foreach_sub_(gates, lo)
    torch._foreach_mul_(gates, -2.0 / (hi - lo + UTILITY_RANGE_EPS))
    torch._foreach_add_(gates, 1.0)
    torch._foreach_clamp_min_(gates, -1.0)
    torch._foreach_clamp_max_(gates, 1.0)
    torch._foreach_sigmoid_(gates)
    return gates


def _multi_directions(batch: GroupBatch, scratch: dict) -> list[Tensor]:
    hp = batch.hp
    if hp["_kind"] == "sgd":
        return batch.grads
    b1, b2, eps = hp["beta1"], hp["beta2"], hp["eps"]
    torch._foreach_lerp_(batch.exp_avgs, batch.grads, 1.0 - b1)
    torch._foreach_mul_(batch.exp_avg_sqs, b2)
    torch._foreach_addcmul_(batch.exp_avg_sqs, batch.grads, batch.grads, value=1.0 - b2)
    d = _buffers(scratch, "direction", batch.params)
    torch._foreach_copy_(d, batch.exp_avg_sqs)
    torch._foreach_sqrt_(d)
    torch._foreach_mul_(d, [1.0 / math.sqrt(1.0 - b2**t) for t in batch.steps])
    torch._foreach_add_(d, eps)
    torch._foreach_reciprocal_(d)
    torch._foreach_mul_(d, batch.exp_avgs)
    torch._foreach_mul_(d, [1.0 / (1.0 - b1**t) for t in batch.steps])
    return d


def _multi_noise_stds(batch: GroupBatch, xs: list[Tensor]) -> list[Tensor]:
    hp = batch.hp
    rms = torch._foreach_mul(torch._foreach_norm(xs), noise_scale_coeffs(batch))
    if not hp["instant_noise_scale"]:
        nb = hp["noise_beta"]
        torch._foreach_lerp_(batch.noise_emas, rms, 1.0 - nb)
        rms = torch._foreach_mul(batch.noise_emas, _ema_bias_corrections(batch))
    stds = torch._foreach_mul(rms, hp["sigma"])
    torch._foreach_clamp_min_(stds, hp["min_noise_std"])
    return stds


def multi_param_update(batch: GroupBatch, lo: Tensor, hi: Tensor, scratch: dict,
                       hook: Optional[NoiseHook]) -> None:
    hp = batch.hp
    adaptive = hp.get("adaptive_noise", False)
    gates = _multi_gates(batch, lo, hi, scratch)
    xs = _multi_directions(batch, scratch)
    if adaptive or hp["sigma"] != 0.0:
        noise = draw_unit_noise(batch, 1.0 if adaptive else hp["sigma"], scratch)
        if adaptive:
            torch._foreach_mul_(noise, _multi_noise_stds(batch, xs))
        if hook is not None:
            for p, x, xi in zip(batch.params, xs, noise):
                hook(p, x, xi)
        if xs is batch.grads:  # never write into the user's gradients
            torch._foreach_add_(noise, xs)
            xs = noise
        else:
            torch._foreach_add_(xs, noise)
    decay = 1.0 - hp["lr"] * hp["weight_decay"]
    if decay != 1.0:
        torch._foreach_mul_(batch.params, decay)
    torch._foreach_addcmul_(batch.params, xs, gates, value=-hp["lr"])


def _buffers(scratch: dict, name: str, like: list[Tensor]) -> list[Tensor]:
    """Reused scratch tensors shaped like ``like`` (kept off the state dict)."""
    out = []
    for p in like:
        key = (name, id(p))
        buf = scratch.get(key)
        if buf is None or buf.shape != p.shape or buf.device != p.device or buf.dtype != p.dtype:
            buf = scratch[key] = torch.empty_like(p, memory_format=torch.preserve_format)
        out.append(buf)
    return out
