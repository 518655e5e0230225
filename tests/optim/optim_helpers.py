"""Shared helpers for the optimizer tests (not a conftest: imported by name)."""
from __future__ import annotations

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
