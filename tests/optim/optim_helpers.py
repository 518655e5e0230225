"""Shared helpers for the optimizer tests (not a conftest: imported by name)."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import torch

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


def params_for(state_dict: dict) -> list:
    """Proxy parameters of the shapes a saved optimizer state describes, in saved order."""
    ids = [i for g in state_dict["param_groups"] for i in g["params"]]
    first_key = {"avg_utility"}
    out = []
    for i in ids:
        entry = state_dict["state"][i]
        shape = next(v.shape for k, v in entry.items() if k in first_key)
        out.append(torch.nn.Parameter(torch.randn(shape)))
    return out


def group_params(state_dict: dict, params: list) -> list[dict]:
    """Param groups mirroring the saved ones (same sizes), for the constructor."""
    groups, start = [], 0
    for g in state_dict["param_groups"]:
        n = len(g["params"])
        groups.append({"params": params[start:start + n]})
        start += n
    return groups


def set_random_grads(params: list, gen, scale: float = 1e-2) -> None:
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen) * scale


SCHEDULES = ("single-tensor", "multi-tensor", "two-lane")


def use_schedule(schedule: str, monkeypatch) -> tuple[bool, dict]:
    """Make CPU steps run as ``schedule`` whatever the tensor sizes.

    Returns the ``foreach`` value to construct with and a counter of two-lane steps, so a test
    can show the schedule it meant to test really ran. On a one-thread machine the two-lane
    step is still taken (its worker thread then shares the core).
    """
    from upgd_migrate.optim import _two_lane as L
    ran = {"two-lane": 0}
    real_step = L.step

    def counted(*args):
        ran["two-lane"] += 1
        return real_step(*args)

    monkeypatch.setattr(L, "step", counted)
    if schedule == "two-lane":
        monkeypatch.setattr(L, "MIN_NOISE_NUMEL", 0)
        monkeypatch.setattr(L, "MIN_MEAN_NUMEL", 0)
        if not L._spare_thread():
            monkeypatch.setattr(L, "_spare_thread", lambda: True)
    else:
        monkeypatch.setattr(L, "MIN_NOISE_NUMEL", 1 << 62)
    return schedule != "single-tensor", ran


@contextmanager
def no_cuda_sync():
    """Raise on any CUDA host sync inside the block (after one synchronize before it)."""
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")
