"""Real DCP folders for the tests: legacy UPGD states saved with ``torch.distributed.checkpoint``.

A legacy optimizer is an ordinary ``torch.optim.Optimizer`` holding a fixture's group options and
per-parameter state (what the reference classes held), so ``get_state_dict`` flattens it exactly
as it flattens theirs. Single process: ``dcp.save`` / ``dcp.load`` need no process group.
"""
from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_state_dict,
                                                     set_state_dict)

from ckpt_helpers import optim_state, vgs_state

warnings.filterwarnings("ignore", "torch.distributed is disabled")


class Net(nn.Module):
    """The fixtures' actor-critic: tensors 16x6, 16, 2x16, 2, 1x16, 1."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body, self.pi, self.v = nn.Linear(6, 16), nn.Linear(16, 2), nn.Linear(16, 1)


class Legacy(torch.optim.Optimizer):
    def __init__(self, params, group: dict) -> None:
        super().__init__(params, group)

    def step(self, closure=None):  # never stepped: it only holds a saved state
        return None


def legacy(model: nn.Module, fixture: str = "adaptive_upgd_g1.pt") -> Legacy:
    sd = optim_state(fixture)
    group = {k: v for k, v in sd["param_groups"][0].items() if k != "params"}
    opt = Legacy(model.parameters(), group)
    for p, pid in zip(model.parameters(), sd["param_groups"][0]["params"]):
        opt.state[p] = dict(sd["state"][pid])
    return opt


def options(flat: bool) -> StateDictOptions:
    return StateDictOptions(flatten_optimizer_state_dict=flat)


def save_legacy(folder: Path, fixture: str = "adaptive_upgd_g1.pt", flat: bool = False,
                top: str = "optim", vgs: str | None = None) -> Net:
    model = Net()
    msd, osd = get_state_dict(model, legacy(model, fixture), options=options(flat))
    state = {"model": msd, top: osd}
    if vgs:
        state["vgs"] = vgs_state(vgs)
    dcp.save(state, checkpoint_id=str(folder))
    return model


def resume(folder: Path, flat: bool = False, top: str = "optim"):
    """A fresh model + packaged AdaptiveUPGD loaded with torch's own dcp.load + set_state_dict."""
    from upgd_migrate.optim.upgd import AdaptiveUPGD

    model = Net()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    opt = AdaptiveUPGD(model.parameters(), lr=1e-4)
    msd, osd = get_state_dict(model, opt, options=options(flat))
    dcp.load({"model": msd, top: osd}, checkpoint_id=str(folder))
    set_state_dict(model, opt, model_state_dict=msd, optim_state_dict=osd, options=options(flat))
    return model, opt


def metadata(folder: Path):
    """The folder's Metadata, read with torch's classes (test code: trusted files only)."""
    with open(folder / ".metadata", "rb") as fh:
        return pickle.load(fh)


def write_metadata(folder: Path, md) -> None:
    (folder / ".metadata").write_bytes(pickle.dumps(md))
