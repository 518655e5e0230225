"""What an observed step shows its observer: per param group, one row of reductions.

``observe_next_step(observer)`` (on the optimizers) has the next step call
``observer(batch, row)`` once per param group, with ``row`` laid out as::

    [||x_1||, ..., ||x_n||, ||xi_1||, ..., ||xi_n||, sum of every gate element]

``x_i`` is what the noise is added to (the gradient, or Adam's direction), ``xi_i`` the noise
actually added (zeros for a noiseless group), the gate ``1-s``; ``n`` is the number of
parameters of ``batch`` that stepped. For a sharded group (FSDP2) the row is of the whole
tensors, the same on every rank, so a logged step is a collective there (as ``verify``'s
recorder is): every rank logs the same steps. ``row`` is either a 1-D float32 tensor on the
group's device, not yet read (a CUDA step never waits for it), or a list of host floats (the CPU
two-lane step, where a read costs nothing).

The step computes the row where it costs least: norms it takes anyway (the adaptive noise
std's) are reused, and the two-lane step spreads the rest over its lanes. An observed step
runs the very same arithmetic, draws and schedule as an unobserved one: the row is only read
from its tensors.
"""
from __future__ import annotations

from typing import Callable, Optional, Union

import torch
from torch import Tensor

from upgd_migrate.optim import _dist

Row = Union[Tensor, list]
StepObserver = Callable[[object, Row], None]


def sum_dtype(t: Tensor) -> Optional[torch.dtype]:
    """Half precision is summed in float32, so a large tensor's norm cannot overflow."""
    return torch.float32 if t.dtype in (torch.float16, torch.bfloat16) else None


def norms(tensors: list[Tensor]) -> Tensor:
    """Per-tensor 2-norms as one float32 tensor on the first tensor's device (no host sync)."""
    first = tensors[0]
    if all(t.dtype == first.dtype and t.device == first.device for t in tensors):
        return torch.stack(torch._foreach_norm(tensors, 2.0, dtype=sum_dtype(first))).float()
    # A group spread over dtypes or devices (the single-tensor path allows it).
    return torch.stack([torch.linalg.vector_norm(t, dtype=sum_dtype(t))
                        .to(first.device, torch.float32) for t in tensors])


def total(tensors: list[Tensor], device: torch.device) -> Tensor:
    """Sum of all elements of ``tensors`` (a one-element float32 tensor on ``device``).

    The fast paths keep a group's gates as views of one flat buffer: then it is one sum, not
    one per tensor.
    """
    base = tensors[0]._base
    if base is not None and base.dim() == 1 and all(t._base is base for t in tensors) \
            and base.numel() == sum(t.numel() for t in tensors):
        tensors = [base]
    sums = [t.sum(dtype=sum_dtype(t)).to(device, torch.float32) for t in tensors]
    return (sums[0] if len(sums) == 1 else torch.stack(sums).sum()).reshape(1)


def row(xs: list[Tensor], noise: Optional[list[Tensor]], gates: list[Tensor], *,
        x_norms: Optional[Tensor] = None, noise_norms: Optional[Tensor] = None,
        sharding: Optional[_dist.Sharding] = None) -> Tensor:
    """The row from the parts (or from norms already taken), on the device; with ``sharding``,
    the parts are this rank's pieces and the row that of the whole tensors."""
    x = norms(xs) if x_norms is None else x_norms.float()
    if noise_norms is not None:
        z = noise_norms.float()
    elif noise is None:
        z = torch.zeros_like(x)
    else:
        z = norms(noise)
    z = z.to(x.device)
    if sharding is not None:
        return _whole(x, z, gates, sharding)
    return torch.cat((x, z, total(gates, x.device)))


def _whole(x: Tensor, z: Tensor, gates: list[Tensor], sharding: _dist.Sharding) -> Tensor:
    """Whole-tensor norms and gate sum from the pieces' (one collective; replicas count once)."""
    gate_sums = torch.stack([g.sum(dtype=torch.float64).to(x.device) for g in gates])
    parts = torch.stack((x.double().square(), z.double().square(), gate_sums))
    parts = _dist.all_reduce_sum(parts, sharding)
    return torch.cat((parts[:2].sqrt().flatten(), parts[2].sum().reshape(1))).float()

