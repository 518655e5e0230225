"""The multi-tensor step: the single-tensor reference's math with few, large, in-place ops.

What makes it cheap:

- Every per-step temporary (the gate, the Adam direction, the noise) lives in one flat buffer
  per group, reused across steps, with one view per parameter. Work that touches no parameter
  (the utility range, the gate's five elementwise ops, the noise draw, adding noise to the
  direction) is one op on the flat buffer, whatever the number of tensors.
- The Adam moments and the direction come from torch's fused Adam kernel run with ``lr=-1``
  on a buffer instead of the parameters: one pass writes ``buffer += m̂/(sqrt(v̂)+eps)`` and
  updates both moments. With fixed noise the buffer already holds the noise, so the noise is
  added for free.
- Nothing reads a device value on the host: the utility range, norms and noise scales are 0-d
  device tensors, so a CUDA step never waits for the GPU.

On CPU with spare threads, :mod:`._two_lane` runs the same pieces on two threads instead.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

from upgd_migrate.optim import _dist, _observe
from upgd_migrate.optim._functional import (
    UTILITY_RANGE_EPS,
    GroupBatch,
    NoiseHook,
    cached_for,
    call_hook,
    draw_noise,
    draw_unit_noise,
    ema_bias_corrections,
    group_buffer,
    is_noisy,
    rms_coeffs,
)
from upgd_migrate.optim._observe import StepObserver

_FUSED_ADAM_DEVICES = ("cpu", "cuda")
_FUSED_ADAM_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def supports(batch: GroupBatch) -> bool:
    """One device and dtype per group, dense strided tensors: what the flat buffers need."""
    first = batch.params[0]
    return all(p.device == first.device and p.dtype == first.dtype and p.layout == torch.strided
               for p in batch.params)


def update_traces(batch: GroupBatch) -> None:
    """``u <- b_u*u - (1-b_u)*g*p``, in place."""
    b = batch.hp["beta_utility"]
    torch._foreach_mul_(batch.utils, b)
    torch._foreach_addcmul_(batch.utils, batch.grads, batch.params, value=-(1.0 - b))


def utility_update(batch: GroupBatch, scratch: dict) -> tuple[Tensor, Tensor]:
    """Update the traces; leave ``û`` in the gate buffer; return its (min, max)."""
    update_traces(batch)
    flat, views = group_buffer(scratch, "gate", batch)
    for view, u, inv_bc in zip(views, batch.utils, batch.utility_inv_bc()):
        torch.mul(u, inv_bc, out=view)
    if not flat.numel():  # only a rank's empty shards: neutral for the cross-rank min/max
        inf = torch.full((), torch.inf, dtype=flat.dtype, device=flat.device)
        return inf, -inf
    lo, hi = torch.aminmax(flat)
    return lo, hi


def _gates(batch: GroupBatch, lo: Tensor, hi: Tensor, scratch: dict) -> list[Tensor]:
    """``1-s = sigmoid(1-2n)``, ``n = (û-lo)/(hi-lo+eps)``, in place over ``û``.

    ``û - lo`` comes first, from the separately rounded ``û``, as in the reference: with equal
    utilities it is exactly zero, where folding ``lo`` into an offset would leave rounding error
    that the ``1/(hi-lo+1e-8)`` factor blows up. The reference's clamp of ``n`` to [0, 1] is
    skipped: ``lo`` and ``hi`` are the min and max of these very values, so ``û - lo >= 0``
    exactly and ``n < 1``; that saves a pass over every element.
    """
    flat, views = group_buffer(scratch, "gate", batch)
    flat.sub_(lo).mul_(-2.0 / (hi - lo + UTILITY_RANGE_EPS)).add_(1.0).sigmoid_()
    return views


def _step_tensors(batch: GroupBatch, device: torch.device) -> list[Tensor]:
    made: dict[int, Tensor] = {}
    for t in batch.steps:
        if t not in made:
            made[t] = torch.full((), float(t), dtype=torch.float32, device=device)
    return [made[t] for t in batch.steps]


def _add_adam_direction(out: list[Tensor], batch: GroupBatch) -> None:
    """Update the moments and add ``d = m̂/(sqrt(v̂)+eps)`` to ``out``."""
    hp, first = batch.hp, batch.params[0]
    b1, b2, eps = hp["beta1"], hp["beta2"], hp["eps"]
    if first.device.type in _FUSED_ADAM_DEVICES and first.dtype in _FUSED_ADAM_DTYPES:
        # Adam's update with lr = -1 on `out` instead of the parameters: out += d.
        torch._fused_adam_(out, batch.grads, batch.exp_avgs, batch.exp_avg_sqs, [],
                           _step_tensors(batch, first.device), lr=-1.0, beta1=b1, beta2=b2,
                           weight_decay=0.0, eps=eps, amsgrad=False, maximize=False)
        return
    torch._foreach_lerp_(batch.exp_avgs, batch.grads, 1.0 - b1)
    torch._foreach_mul_(batch.exp_avg_sqs, b2)
    torch._foreach_addcmul_(batch.exp_avg_sqs, batch.grads, batch.grads, value=1.0 - b2)
    denom = torch._foreach_sqrt(batch.exp_avg_sqs)
    torch._foreach_mul_(denom, [1.0 / (1.0 - b2**t) ** 0.5 for t in batch.steps])
    torch._foreach_add_(denom, eps)
    torch._foreach_addcdiv_(out, batch.exp_avgs, denom, [1.0 / (1.0 - b1**t) for t in batch.steps])


def x_norms(batch: GroupBatch, xs: list[Tensor]) -> Tensor:
    """``||x||`` per tensor in x's dtype, what the adaptive noise std is taken from."""
    if batch.sharding is None:
        return torch.stack(torch._foreach_norm(xs))
    # whole-tensor norms from the shards, one collective for the group
    return _dist.whole_norms(xs, batch.sharding).to(batch.params[0].dtype)


def noise_stds(batch: GroupBatch, xs: list[Tensor], scratch: dict,
               norms: Tensor | None = None) -> list[Tensor]:
    """``max(sigma * rms(x), min_noise_std)`` per tensor (or its EMA), as 0-d device tensors;
    ``norms``: :func:`x_norms` of ``xs`` when already taken."""
    hp = batch.hp
    rms = (x_norms(batch, xs) if norms is None else norms) * _rms_coeffs(batch, scratch)
    if hp["instant_noise_scale"]:
        return list(rms.mul_(hp["sigma"]).clamp_min_(hp["min_noise_std"]).unbind())
    torch._foreach_lerp_(batch.noise_emas, list(rms.unbind()), 1.0 - hp["noise_beta"])
    stds = torch._foreach_mul(batch.noise_emas, ema_bias_corrections(batch))
    torch._foreach_mul_(stds, hp["sigma"])
    torch._foreach_clamp_min_(stds, hp["min_noise_std"])
    return stds


def _rms_coeffs(batch: GroupBatch, scratch: dict) -> Tensor:
    """``1/sqrt(numel)`` per tensor, on the device, made once per parameter set.

    Built from fills rather than from a host list, so even the first step copies nothing
    from the host.
    """
    first = batch.params[0]
    return cached_for(scratch, ("rms_coeffs", batch.hp["_index"]), batch.params,
                      lambda: torch.stack([torch.full((), c, device=first.device,
                                                      dtype=first.dtype)
                                           for c in rms_coeffs(batch)]))


def _draw(batch: GroupBatch, scratch: dict, xs: list[Tensor] | None) -> list[Tensor]:
    """Noise of the batch's shapes; scaled per tensor from ``xs`` when adaptive."""
    hp = batch.hp
    adaptive = hp.get("adaptive_noise", False)
    views = draw_noise(batch, scratch)
    if adaptive:
        torch._foreach_mul_(views, noise_stds(batch, xs, scratch))
    return views


def _add_adaptive_noise(direction: list[Tensor], batch: GroupBatch, scratch: dict,
                        seen: Optional[Seen]) -> None:
    """``d += std * z`` in one pass per tensor: the unit noise is never scaled on its own."""
    norms = x_norms(batch, direction)
    stds = noise_stds(batch, direction, scratch, norms)
    unit = draw_unit_noise(batch, 1.0, scratch)
    if seen is not None:  # the std's own norms, unless they are whole-tensor ones
        seen(direction, None, x_norms=norms if batch.sharding is None else None,
             noise_norms=_observe.norms(unit) * torch.stack(stds).float())
    torch._foreach_addcmul_(direction, unit, stds)


def _call_hook(hook: NoiseHook | None, batch: GroupBatch, xs: list[Tensor],
               noise: list[Tensor]) -> None:
    if hook is not None:
        for i, (x, xi) in enumerate(zip(xs, noise)):
            call_hook(hook, batch, i, x, xi)


# ``seen(xs, noise, x_norms=None, noise_norms=None)``: makes the group's row (see
# ``_observe.row``) and hands it to the StepObserver.
Seen = Callable[..., None]


def direction_of(batch: GroupBatch, scratch: dict) -> list[Tensor]:
    """``x``, what the noise is added to: the gradient (SGD type) or Adam's ``d`` in a buffer."""
    if batch.hp["_kind"] == "sgd":
        return batch.grads
    flat, direction = group_buffer(scratch, "direction", batch)
    flat.zero_()
    _add_adam_direction(direction, batch)
    return direction


def _fixed_noise_direction(batch: GroupBatch, scratch: dict, seen: Optional[Seen]) -> list[Tensor]:
    """Fixed noise: the direction lands on the drawn noise directly (one pass saved).

    Observed, the noise's norms are taken and the noise copied first, and ``d`` is read back
    as ``noise - (noise + d)`` (its sign does not matter to a norm), so the step itself runs
    the very same ops as an unobserved one.
    """
    noise = _draw(batch, scratch, None)
    if seen is None:
        _add_adam_direction(noise, batch)
        return noise
    noise_norms = _observe.norms(noise)
    _, kept = group_buffer(scratch, "direction", batch)
    torch._foreach_copy_(kept, noise)
    _add_adam_direction(noise, batch)
    torch._foreach_sub_(kept, noise)
    seen(kept, None, noise_norms=noise_norms)
    return noise


def _noisy_direction(batch: GroupBatch, scratch: dict, hook: NoiseHook | None,
                     seen: Optional[Seen] = None) -> list[Tensor]:
    """``x + noise`` per parameter: ``x`` is the gradient (SGD type) or Adam's ``d``."""
    hp = batch.hp
    adaptive = hp.get("adaptive_noise", False)
    noisy = is_noisy(batch)
    if hp["_kind"] == "sgd":
        if not noisy:
            if seen is not None:
                seen(batch.grads, None)
            return batch.grads
        noise = _draw(batch, scratch, batch.grads)
        _call_hook(hook, batch, batch.grads, noise)
        if seen is not None:
            seen(batch.grads, noise)
        torch._foreach_add_(noise, batch.grads)  # never written into the user's gradients
        return noise
    if noisy and not adaptive and hook is None:
        return _fixed_noise_direction(batch, scratch, seen)
    direction = direction_of(batch, scratch)
    if noisy and adaptive and hook is None:
        _add_adaptive_noise(direction, batch, scratch, seen)
    elif noisy:
        noise = _draw(batch, scratch, direction)
        _call_hook(hook, batch, direction, noise)
        if seen is not None:
            seen(direction, noise)
        torch._foreach_add_(direction, noise)
    elif seen is not None:
        seen(direction, None)
    return direction


def apply_decay(batch: GroupBatch) -> None:
    decay = 1.0 - batch.hp["lr"] * batch.hp["weight_decay"]
    if decay != 1.0:
        torch._foreach_mul_(batch.params, decay)


def param_update(batch: GroupBatch, lo: Tensor, hi: Tensor, scratch: dict,
                 hook: NoiseHook | None, observe: Optional[StepObserver] = None) -> None:
    gates = _gates(batch, lo, hi, scratch)
    seen = None if observe is None else (
        lambda xs, noise, **norms: observe(batch, _observe.row(xs, noise, gates, **norms,
                                                               sharding=batch.sharding)))
    update = _noisy_direction(batch, scratch, hook, seen)
    apply_decay(batch)
    torch._foreach_addcmul_(batch.params, update, gates, value=-batch.hp["lr"])
