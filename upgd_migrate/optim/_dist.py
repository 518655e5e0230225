"""torch.distributed support: shared noise streams and whole-tensor statistics of sharded tensors.

- DDP (plain tensors, world size > 1): every rank holds a full replica and steps it on its own,
  so the noise must be the same numbers on every rank. It comes from a generator reseeded for
  every draw from ``(seed, group, draw count, shard, bucket)``; ``seed`` is broadcast once from
  rank 0 (derived from rank 0's ``torch.initial_seed()``), and seed and draw count live in the
  param group, so a resumed state continues the same streams. The user's global RNG is never
  touched, so per-rank seeds (``seed + rank``) keep their meaning for everything else.
- FSDP2 (DTensor parameters): the step works on local shards; what must be whole-tensor (the
  utility range over every tensor, ``rms(x)`` per tensor, the VGS means) is reduced in one
  collective per quantity for all tensors at once. A shard's noise stream is keyed by its
  coordinate on the mesh's shard dimensions only: independent across shards, identical across
  the replicate dimension of an HSDP mesh.

Imports torch only.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

NOISE_SYNC_CHOICES = ("auto", "off")
_SEEDINGS = itertools.count()  # shared seeds handed out in this process so far
_MASK64 = (1 << 64) - 1


def world_size() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


_DTENSOR: list = []  # the DTensor class (or None), looked up once


def _dtensor_type() -> type | None:
    if not _DTENSOR:
        cls = None
        if dist.is_available():
            try:
                from torch.distributed.tensor import DTensor as cls
            except ImportError:  # pragma: no cover - torch builds without DTensor
                cls = None
        _DTENSOR.append(cls)
    return _DTENSOR[0]


def is_dtensor(t: Any) -> bool:
    cls = _dtensor_type()
    return cls is not None and isinstance(t, cls)


def any_dtensor(tensors: list[Tensor]) -> bool:
    """Whether any is a DTensor; free without a process group (a DTensor needs one), so one
    process pays nothing per step."""
    if not (dist.is_available() and dist.is_initialized()):
        return False
    cls = _dtensor_type()
    return cls is not None and any(isinstance(t, cls) for t in tensors)


def local(t: Tensor) -> Tensor:
    """The local shard of a DTensor; any other tensor as it is.

    The DTensor's own local tensor, the same object every step, so the fast paths' cached
    buffers (keyed by tensor identity) stay valid: ``to_local()`` of a ``Parameter(DTensor)``
    returns a fresh view each call, which would rebuild them every step.
    """
    if not is_dtensor(t):
        return t
    piece = getattr(t, "_local_tensor", None)
    return piece if type(piece) in (Tensor, torch.nn.Parameter) else t.to_local()


def unchanged(t: Tensor) -> Tensor:
    return t


# ------------------------------------------------------------------------------- noise streams


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def mix(*values: int) -> int:
    """A well-spread 63-bit seed from integers (Python's ``hash`` differs between processes)."""
    h = 0
    for v in values:
        h = _splitmix64(h ^ (int(v) & _MASK64))
    return h >> 1


def broadcast_seed(device: torch.device) -> int:
    """Rank 0's seed for the shared streams, on every rank (one broadcast).

    Derived from rank 0's ``torch.initial_seed()`` rather than equal to it, so the noise is not
    the very numbers rank 0's global generator produced (e.g. its weight initialisation), and
    from how many optimizers of this process seeded before, so two optimizers (an actor's and
    a critic's) do not share streams. Every rank runs the same program: the count agrees.
    """
    ordinal = next(_SEEDINGS)
    seed = mix(torch.initial_seed(), 0x55504744, ordinal) if dist.get_rank() == 0 else 0
    backend = str(dist.get_backend())
    if "nccl" in backend and torch.cuda.is_available():
        device = torch.device("cuda", torch.cuda.current_device())
    elif "gloo" in backend:
        device = torch.device("cpu")
    t = torch.tensor([seed], dtype=torch.int64, device=device)
    dist.broadcast(t, src=0)
    return int(t.item())


def seed_groups(groups: list[dict], device: torch.device) -> None:
    """Give every param group the shared seed: one a group already holds (a resumed state),
    else one broadcast from rank 0. Every rank holds the same groups, so all take one branch."""
    known = next((g["noise_seed"] for g in groups if g.get("noise_seed") is not None), None)
    if known is None:
        known = broadcast_seed(device)
    for g in groups:
        if g.get("noise_seed") is None:
            g["noise_seed"] = known
        g.setdefault("noise_draws", 0)


def stream(scratch: dict, group: dict, index: int):
    """This draw's generator factory for one group: ``(shard, bucket, device) -> Generator``.

    Reseeding per draw from a counter (instead of saving a generator's state) makes the streams
    resumable from two integers in the param group, which DCP and ``weights_only`` loads keep.
    """
    seed, draws = group["noise_seed"], group["noise_draws"]

    def generator(shard: int, bucket: int, device: torch.device) -> torch.Generator:
        key = ("generator", str(device))
        gen = scratch.get(key)
        if gen is None:
            gen = scratch[key] = torch.Generator(device=device)
        gen.manual_seed(mix(seed, index, draws, shard, bucket))
        return gen
    return generator


# ------------------------------------------------------------------------------- sharding


@dataclass
class Sharding:
    """Where the pieces of a group's tensors live, for whole-tensor reductions."""

    group: Any  # process group over every rank holding a piece (None: the default group)
    numels: list[int]  # whole-tensor element counts
    primary: list[bool]  # this rank's piece counts in sums (False on replicas but the first)
    shard_keys: list[int]  # the piece's coordinate on the shard dimensions (noise stream key)
    originals: list[Tensor]  # the DTensors (plain tensors as they are), for noise hooks


def _piece(p: Tensor) -> tuple[bool, int]:
    mesh, coord = p.device_mesh, p.device_mesh.get_coordinate()
    primary, key = True, 0
    for dim, placement in enumerate(p.placements):
        if placement.is_shard():
            key = key * mesh.size(dim) + coord[dim]
        elif placement.is_replicate():
            primary = primary and coord[dim] == 0
        else:
            raise NotImplementedError(f"parameters with {placement} placements are not supported "
                                      "(Shard and Replicate are)")
    return primary, key


def _process_group(meshes: list) -> Any:
    first = meshes[0]
    if all(m is first or m == first for m in meshes) and first.ndim == 1:
        return first.get_group()
    if all(m.size() == dist.get_world_size() for m in meshes):
        return None  # every mesh spans the default group
    raise NotImplementedError("parameters on several device meshes that do not span every rank "
                              "are not supported in one optimizer")


def sharding_of(params: list[Tensor]) -> Sharding:
    """Where the pieces of ``params`` (some of them DTensors) live."""
    meshes = [p.device_mesh for p in params if is_dtensor(p)]
    group = _process_group(meshes)
    first = dist.get_rank(group) == 0 if group is not None else dist.get_rank() == 0
    numels, primary, keys = [], [], []
    for p in params:
        is_primary, key = _piece(p) if is_dtensor(p) else (first, 0)
        numels.append(p.numel())
        primary.append(is_primary)
        keys.append(key)
    return Sharding(group, numels, primary, keys, list(params))


def all_reduce_sum(values: Tensor, sharding: Sharding) -> Tensor:
    """Sum over pieces of per-tensor partial sums ``values[..., i]`` (one collective); replicas
    other than the first contribute zero, so an HSDP mesh counts each element once."""
    mask = torch.tensor(sharding.primary, dtype=values.dtype, device=values.device)
    values = values * mask
    dist.all_reduce(values, op=dist.ReduceOp.SUM, group=sharding.group)
    return values


def whole_range(lo: Tensor, hi: Tensor, group: Any) -> tuple[Tensor, Tensor]:
    """Min and max over every rank (one collective); an empty piece brings (+inf, -inf)."""
    both = torch.stack([-lo, hi])
    dist.all_reduce(both, op=dist.ReduceOp.MAX, group=group)
    return -both[0], both[1]


def whole_norms(xs: list[Tensor], sharding: Sharding) -> Tensor:
    """``||x||`` of every whole tensor from the local pieces, in float64 (one collective)."""
    local_norms = torch.stack(torch._foreach_norm(xs)).double()
    return all_reduce_sum(local_norms.square(), sharding).sqrt()


def grad_moments(grads: list[Tensor], device: torch.device) -> tuple[list[Tensor], list[Tensor]]:
    """Whole-tensor ``mean(g)`` and ``mean(g^2)`` (float32) of every gradient, for the VGS.

    Plain tensors: computed as the VGS always did (DDP gradients are already identical on every
    rank). DTensors: local sums, one collective for all tensors, divided by the whole numel, so
    every rank gets the same statistics, and the same factor.
    """
    if not any_dtensor(grads):
        gs = [g.detach().to(torch.float32) for g in grads]
        return [g.mean().to(device) for g in gs], [g.square().mean().to(device) for g in gs]
    sharding = sharding_of(grads)
    pieces = [local(g).detach().to(torch.float64) for g in grads]
    sums = torch.stack([torch.stack([g.sum(), g.square().sum()]) for g in pieces]).T
    sums = all_reduce_sum(sums.contiguous(), sharding)
    numels = torch.tensor(sharding.numels, dtype=torch.float64, device=sums.device)
    means = (sums / numels.clamp_min(1)).to(torch.float32).to(device)
    return list(means[0].unbind()), list(means[1].unbind())


def as_whole(t: Tensor, like: Tensor) -> Tensor:
    """``t``, a local piece of ``like``'s shape, as a DTensor like ``like`` (for noise hooks,
    whose norms then cover the whole tensor); unchanged when ``like`` is not a DTensor."""
    if not is_dtensor(like):
        return t
    cls = _dtensor_type()
    return cls.from_local(t, like.device_mesh, like.placements, run_check=False,
                          shape=like.shape, stride=like.stride())
