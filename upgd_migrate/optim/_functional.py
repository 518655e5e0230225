"""The UPGD family's math: shared pieces and the single-tensor reference implementation.

The fast paths are ``_multi_tensor`` (few large ops; CUDA, and CPU on one thread) and
``_two_lane`` (CPU with a spare thread: the noise draw beside the arithmetic). All share every
decision that is not arithmetic: which parameters step, how noise is drawn
(:func:`draw_unit_noise`, one ``normal_`` per group into a reused buffer), and where the
per-tensor scalars come from. Tests drive each from the same RNG state as this reference and
check they agree, so a fast path can never drift from the readable one.

Notation (docs/optimizers.md): utility ``u <- b_u*u + (1-b_u)*(-g*p)``, bias-corrected
``û = u/(1-b_u^t)``; gate ``1-s`` with ``s = sigmoid(2(n-0.5))`` and
``n = clamp((û-min)/(max-min+1e-8), 0, 1)``, min and max over every tensor of the optimizer;
``x`` is what the noise is added to (``g`` for the SGD type, the Adam direction ``d`` for the
Adam types); the update is ``p <- p*(1-lr*wd) - lr*(x + xi)*(1-s)``. With ``update="paper"``
(this implementation only) the gate is :func:`paper_gate` and the step ``2*lr``.

Nothing here calls ``.item()`` or compares device tensors in Python: per-tensor norms, the
utility range and the noise scales stay on the device, so a CUDA step never waits on the host.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import Tensor

from upgd_migrate.optim import _dist, _observe
from upgd_migrate.optim._observe import StepObserver

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
    # Set under torch.distributed: the pieces' layout when the params are DTensor shards
    # (``params`` etc. then hold the local shards), and the shared noise streams.
    sharding: Optional[_dist.Sharding] = None
    rng: Optional[Callable[[int, int, torch.device], torch.Generator]] = None

    def utility_inv_bc(self) -> list[float]:
        b = self.hp["beta_utility"]
        return [1.0 / (1.0 - b**t) for t in self.steps]


def cached_for(scratch: dict, key: tuple, params: list[Tensor], make: Callable[[], object]):
    """``scratch[key]``, rebuilt by ``make()`` whenever the parameter set (identity or shape)
    changes, e.g. when a parameter without a gradient sits out a step."""
    ids = tuple((id(p), p.shape) for p in params)
    hit = scratch.get(key)
    if hit is None or hit[0] != ids:
        hit = scratch[key] = (ids, make())
    return hit[1]


def flat_buffers(scratch: dict, key: tuple, params: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
    """A reused flat buffer of the parameters' total size (one device and dtype) and its
    per-parameter views."""
    def make() -> tuple[Tensor, list[Tensor]]:
        first = params[0]
        flat = torch.empty(sum(p.numel() for p in params), device=first.device, dtype=first.dtype)
        pieces = torch.split(flat, [p.numel() for p in params])
        return flat, [v.view(p.shape) for v, p in zip(pieces, params)]
    return cached_for(scratch, key, params, make)


def group_buffer(scratch: dict, name: str, batch: GroupBatch) -> tuple[Tensor, list[Tensor]]:
    """The group's reused flat buffer ``name`` and its per-parameter views; every step
    implementation asks by the same key, so switching between them allocates nothing new."""
    return flat_buffers(scratch, (name, batch.hp["_index"]), batch.params)


def is_noisy(batch: GroupBatch) -> bool:
    return batch.hp.get("adaptive_noise", False) or batch.hp["sigma"] != 0.0


def draw_noise(batch: GroupBatch, scratch: dict) -> list[Tensor]:
    """This step's noise: at std ``sigma`` for fixed noise, unit for adaptive noise (scaled per
    tensor once ``x`` is known)."""
    adaptive = batch.hp.get("adaptive_noise", False)
    return draw_unit_noise(batch, 1.0 if adaptive else batch.hp["sigma"], scratch)


def draw_unit_noise(batch: GroupBatch, std: float, scratch: dict) -> list[Tensor]:
    """Gaussian noise of the batch's shapes: one ``normal_`` into a reused flat buffer per device.

    Drawing every tensor of a group in one call costs less than one call per tensor, and both
    implementations draw through here, so they get the very same numbers.
    With shared streams (:mod:`._dist`) each buffer is drawn from its own generator, keyed by
    its shard and its order in the group, never from the global RNG.
    """
    views: list[Tensor] = [None] * len(batch.params)  # type: ignore[list-item]
    shards = batch.sharding.shard_keys if batch.sharding else [0] * len(batch.params)
    by_key: dict[tuple, list[int]] = {}
    for i, p in enumerate(batch.params):
        by_key.setdefault((p.device, p.dtype, shards[i]), []).append(i)
    for bucket, ((device, dtype, shard), idx) in enumerate(by_key.items()):
        key = ("noise", batch.hp["_index"], device, dtype, shard)
        flat, sub = flat_buffers(scratch, key, [batch.params[i] for i in idx])
        gen = batch.rng(shard, bucket, device) if batch.rng is not None else None
        flat.normal_(0.0, std, generator=gen)
        for i, view in zip(idx, sub):
            views[i] = view
    return views


def numels(batch: GroupBatch) -> list[int]:
    """Whole-tensor element counts (a shard's own count would scale its noise by its size)."""
    return batch.sharding.numels if batch.sharding else [p.numel() for p in batch.params]


def rms_coeffs(batch: GroupBatch) -> list[float]:
    """Per-tensor factor turning ``||x||`` into ``rms(x)``."""
    return [1.0 / math.sqrt(max(n, 1)) for n in numels(batch)]


def call_hook(hook: NoiseHook, batch: GroupBatch, i: int, x: Tensor, xi: Tensor) -> None:
    """The noise hook sees whole tensors: a shard's ``x`` and noise go as DTensors."""
    if batch.sharding is None:
        hook(batch.params[i], x, xi)
        return
    like = batch.sharding.originals[i]
    hook(like, _dist.as_whole(x, like), _dist.as_whole(xi, like))


def ema_bias_corrections(batch: GroupBatch) -> list[float]:
    nb = batch.hp["noise_beta"]
    return [1.0 / (1.0 - nb**k) for k in batch.noise_steps]


def utility_range(batches: list[GroupBatch], ranges: list) -> tuple[Tensor, Tensor]:
    """Min and max of ``û`` over every tensor of the optimizer, from each group's (min, max) or
    None (no elements); over every rank's shards (one collective) when the params are sharded."""
    device = batches[0].params[0].device
    inf = torch.full((), torch.inf, device=device)
    ranges = [r if r is not None else (inf, -inf) for r in ranges]
    lo = torch.stack([r[0].to(device) for r in ranges]).min()
    hi = torch.stack([r[1].to(device) for r in ranges]).max()
    shardings = [b.sharding for b in batches if b.sharding is not None]
    if shardings:
        lo, hi = _dist.whole_range(lo, hi, shardings[0].group)
    return lo, hi


# ---------------------------------------------------------------- single-tensor reference


def single_utility_update(batch: GroupBatch,
                          corrected: bool = True) -> tuple[Tensor, Tensor] | None:
    """Update utility traces; return this group's (min, max) of the bias-corrected utility
    (of the raw trace with ``corrected=False``: the paper's rule divides by that maximum)."""
    b = batch.hp["beta_utility"]
    lows, highs = [], []
    for u, g, p, inv_bc in zip(batch.utils, batch.grads, batch.params, batch.utility_inv_bc()):
        u.mul_(b).add_(-(1.0 - b) * g * p)
        if not u.numel():
            continue  # a zero-size parameter has no utility to rank
        u_hat = u * inv_bc if corrected else u
        lows.append(u_hat.min())
        highs.append(u_hat.max())
    if not lows:
        return None  # every tensor (or this rank's every shard) is empty
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


def _single_noise_std(batch: GroupBatch, i: int, x: Tensor, rms: Tensor | None) -> Tensor | float:
    hp = batch.hp
    if not hp.get("adaptive_noise", False):
        return hp["sigma"]
    if rms is None:
        rms = x.norm() / math.sqrt(max(x.numel(), 1))
    if not hp["instant_noise_scale"]:
        ema, nb = batch.noise_emas[i], hp["noise_beta"]
        ema.mul_(nb).add_((1.0 - nb) * rms)
        rms = ema / (1.0 - nb ** batch.noise_steps[i])
    return torch.clamp(hp["sigma"] * rms, min=hp["min_noise_std"])


def paper_gate(u_hat: Tensor, top: Tensor) -> Tensor:
    """``1 - sigmoid(û / |max u|)``: the UPGD paper's gate, ``max u`` the largest raw trace over
    every tensor. Two fixes (docs/optimizers.md): ``|max u|`` keeps the order when every
    utility is negative (the paper's negative divisor protects the least useful weights most),
    and ``0/0`` is 0 (gate 1/2) where the paper gives NaN (``max u = 0``)."""
    ratio = torch.where(u_hat == 0, 0.0, u_hat / top.abs())
    return 1.0 - torch.sigmoid(ratio)


def _single_gate(batch: GroupBatch, i: int, inv_bc: float, lo: Tensor, hi: Tensor) -> Tensor:
    u_hat = batch.utils[i] * inv_bc
    if batch.hp.get("update") == "paper":
        return paper_gate(u_hat, hi)
    n = ((u_hat - lo) / (hi - lo + UTILITY_RANGE_EPS)).clamp(0.0, 1.0)
    return 1.0 - torch.sigmoid(2.0 * (n - 0.5))


def single_param_update(batch: GroupBatch, lo: Tensor, hi: Tensor, scratch: dict,
                        hook: Optional[NoiseHook], observe: Optional[StepObserver] = None) -> None:
    hp = batch.hp
    # The paper's published UPGD and AdaptiveUPGD step 2*lr (weight decay keeps lr).
    rate = 2.0 * hp["lr"] if hp.get("update") == "paper" else hp["lr"]
    adaptive = hp.get("adaptive_noise", False)
    noise = draw_noise(batch, scratch) if is_noisy(batch) else None
    inv_bcs = batch.utility_inv_bc()
    # Every x first (each reads only its own tensor), so shards' norms go in one collective.
    xs = [_single_direction(batch, i) for i in range(len(batch.params))]
    rms = [None] * len(xs)
    if noise is not None and adaptive and batch.sharding is not None:
        norms = _dist.whole_norms(xs, batch.sharding)
        rms = [(n * c).to(x.dtype) for n, c, x in zip(norms.unbind(), rms_coeffs(batch), xs)]
    seen: tuple[list, list, list] = ([], [], [])
    for i, p in enumerate(batch.params):
        gate = _single_gate(batch, i, inv_bcs[i], lo, hi)
        x = xs[i]
        xi = None
        if noise is not None:
            std = _single_noise_std(batch, i, x, rms[i])
            xi = noise[i] * std if adaptive else noise[i]
            if hook is not None:
                call_hook(hook, batch, i, x, xi)
        update = x + xi if xi is not None else x
        p.mul_(1.0 - hp["lr"] * hp["weight_decay"]).add_(-rate * update * gate)
        if observe is not None:  # x, xi and gate are fresh tensors here: none is written again
            for kept, value in zip(seen, (x, xi, gate)):
                kept.append(value)
    if observe is not None:
        observe(batch, _observe.row(seen[0], seen[1] if noise is not None else None, seen[2],
                                    sharding=batch.sharding))
