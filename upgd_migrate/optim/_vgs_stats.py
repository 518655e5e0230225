"""One step's gradient statistics for the VGS, computed on device without a host round trip.

Per tensor: ``mean(g)`` and ``mean(g^2)`` (the per-parameter EMAs' inputs). Over all tensors
(the reference's "spatial" statistics, kept for its global EMAs and its ``vgs/*`` log keys):
``mean|g|``, the unbiased variance of ``|g|`` over every element, ``||g||_2`` and ``max|g|``.
The reference concatenates every ``|g|`` and calls ``.item()`` per tensor; here three foreach
norms and one mean per tensor give the same figures, and nothing leaves the device.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from upgd_migrate.optim import _dist

# Order of the spatial statistics in StepStats.spatial and in the scaler's global EMA vector.
SPATIAL = ("grad_mean", "grad_var", "grad_norm", "grad_max")


@dataclass
class StepStats:
    index: list[int]  # positions in the scaler's parameter list that had a gradient
    mean: Tensor  # [k] float32: mean(g) per tensor with a gradient
    sq: Tensor  # [k] float32: mean(g^2) per tensor
    spatial: Tensor  # [4] float64, in SPATIAL order


def present_gradients(params: Sequence[Tensor]) -> tuple[list[int], list[Tensor]]:
    """(positions, gradients) of the parameters that have one; sparse gradients are refused."""
    index, grads = [], []
    for i, p in enumerate(params):
        g = p.grad
        if g is None:
            continue
        if g.is_sparse:
            raise RuntimeError("VarianceGradientScaler does not support sparse gradients")
        index.append(i)
        grads.append(g.detach())
    return index, grads


def _by_device(grads: list[Tensor]) -> dict[tuple, list[int]]:
    """Positions grouped by (device, dtype): a foreach call takes one of each."""
    groups: dict[tuple, list[int]] = {}
    for j, g in enumerate(grads):
        groups.setdefault((g.device, g.dtype), []).append(j)
    return groups


def step_stats(params: Sequence[Tensor], device: torch.device) -> StepStats | None:
    """This step's statistics on ``device``, or None when no parameter has a gradient."""
    index, grads = present_gradients(params)
    if not grads:
        return None
    if _dist.any_dtensor(grads):
        return _sharded_stats(index, grads, device)
    k = len(grads)
    mean: list[Tensor] = [None] * k  # type: ignore[list-item]
    sq, l1, l2, top = list(mean), list(mean), list(mean), list(mean)
    f32 = torch.float32
    for members in _by_device(grads).values():
        gs = [grads[j] for j in members]
        norms1 = torch._foreach_norm(gs, 1, dtype=f32)
        norms2 = torch._foreach_norm(gs, 2, dtype=f32)
        norms_inf = torch._foreach_norm(gs, math.inf, dtype=f32)
        squares = torch._foreach_div(torch._foreach_mul(norms2, norms2),
                                     [float(g.numel()) for g in gs])
        for pos, j in enumerate(members):
            mean[j] = gs[pos].mean(dtype=f32).to(device)
            sq[j], l1[j] = squares[pos].to(device), norms1[pos].to(device)
            l2[j], top[j] = norms2[pos].to(device), norms_inf[pos].to(device)
    return StepStats(index, torch.stack(mean), torch.stack(sq),
                     _spatial(torch.stack(l1), torch.stack(l2), torch.stack(top),
                              sum(g.numel() for g in grads)))


def _sharded_stats(index: list[int], grads: list[Tensor], device: torch.device) -> StepStats:
    """FSDP2 shards: whole-tensor statistics from local sums, the same on every rank (two
    collectives for all tensors: the sums, then the max)."""
    sharding = _dist.sharding_of(grads)
    pieces = [_dist.local(g).detach().double() for g in grads]
    sums = torch.stack([torch.stack([g.sum(), g.square().sum(), g.abs().sum()])
                        for g in pieces]).T.contiguous()
    sums = _dist.all_reduce_sum(sums, sharding)
    numels = torch.tensor(sharding.numels, dtype=torch.float64, device=sums.device).clamp_min(1)
    tops = torch.stack([g.abs().max() if g.numel() else g.new_zeros(()) for g in pieces])
    _, top = _dist.whole_range(tops.min(), tops.max(), sharding.group)
    mean = (sums[0] / numels).to(torch.float32).to(device)
    sq = (sums[1] / numels).to(torch.float32).to(device)
    spatial = _spatial(sums[2], sums[1].sqrt(), top.reshape(1), sum(sharding.numels))
    return StepStats(index, mean, sq, spatial.to(device))


def _spatial(l1: Tensor, l2: Tensor, top: Tensor, n: int) -> Tensor:
    """mean|g|, unbiased var(|g|), ||g||_2, max|g| over all n elements, in float64.

    ``var = (sum g^2 - (sum|g|)^2 / n) / (n - 1)``: the same figure as ``torch.var`` over the
    concatenated ``|g|`` (float64 keeps the cancellation small); n = 1 gives NaN, as there.
    """
    s1 = l1.double().sum()
    s2 = l2.double().square().sum()
    var = ((s2 - s1 * s1 / n) / (n - 1)).clamp_min(0.0) if n > 1 else s1 * math.nan
    return torch.stack([s1 / n, var, s2.sqrt(), top.double().max()])
