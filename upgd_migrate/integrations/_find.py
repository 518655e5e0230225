"""Find the UPGD-family optimizers and the VGS a trainer holds, so an adapter needs no wiring."""
from __future__ import annotations

from typing import Any, Iterable, Iterator

import torch

from upgd_migrate.optim import VarianceGradientScaler
from upgd_migrate.optim.monitor import upgd_optimizers


def _attributes(holder: Any) -> Iterator[Any]:
    yield holder
    if isinstance(holder, (list, tuple)):
        for item in holder:
            yield from _attributes(item)
        return
    yield from getattr(holder, "__dict__", {}).values()
    if isinstance(holder, torch.nn.Module):  # e.g. an SB3 policy's actor and critic
        for module in holder.modules():
            yield getattr(module, "optimizer", None)


def find_optimizers(holders: Iterable[Any]) -> list:
    """UPGD-family optimizers that are, or are attributes of, ``holders`` (in order, once)."""
    return upgd_optimizers(value for h in holders for value in _attributes(h))


def find_vgs(holders: Iterable[Any]) -> VarianceGradientScaler | None:
    """The first VarianceGradientScaler among ``holders`` and their attributes, if any."""
    return next((value for h in holders for value in _attributes(h)
                 if isinstance(value, VarianceGradientScaler)), None)


def describe(holders: Iterable[Any]) -> str:
    """The optimizer classes found among ``holders``, for an error message."""
    names = sorted({type(v).__name__ for h in holders for v in _attributes(h)
                    if isinstance(v, torch.optim.Optimizer)})
    return ", ".join(names) if names else "no optimizer"
