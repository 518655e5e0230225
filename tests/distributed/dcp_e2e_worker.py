"""One rank of the FSDP2 -> DCP -> migrate -> FSDP2 resume round trip (test_fsdp_dcp_resume.py).

``PHASE=train``: AdaptiveUPGD with fixed noise (a legacy run: sigma an absolute std) trains 20
steps under FSDP2 and saves model and optimizer with ``get_state_dict`` + ``dcp.save``; it
records the noise level of its last step. ``PHASE=resume``: a fresh FSDP2 model and optimizer
load the (migrated) folder with ``dcp.load`` + ``set_state_dict`` and take one step; it records
the group the optimizer resumed with and the first step's noise level.
"""
from __future__ import annotations

import os
import warnings

import torch.distributed.checkpoint as dcp
from dist_helpers import worker_main
from fsdp_worker import batches, loss_of, sharded
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from upgd_migrate.optim import AdaptiveUPGD, NoiseRecorder

warnings.filterwarnings("ignore")
FOLDER = os.environ["UPGD_E2E_FOLDER"]


def train(rank: int, world: int) -> dict:
    model = sharded()
    opt = AdaptiveUPGD(model.parameters(), lr=1e-3, sigma=1e-3)
    data = batches(21, seed=3)
    for x, y in data[:20]:
        loss_of(model, x, y).backward()
        opt.step()
        opt.zero_grad()
    with NoiseRecorder(opt) as rec:
        loss_of(model, *data[20]).backward()
        opt.step()
        opt.zero_grad()
    msd, osd = get_state_dict(model, opt)
    dcp.save({"model": msd, "optim": osd}, checkpoint_id=FOLDER)
    return {"level": rec.first_step_noise_rms()}


def resume(rank: int, world: int) -> dict:
    model = sharded()
    opt = AdaptiveUPGD(model.parameters(), lr=1e-3, sigma=1e-3)  # the run's old constructor
    msd, osd = get_state_dict(model, opt)
    state = {"model": msd, "optim": osd}
    dcp.load(state, checkpoint_id=FOLDER)
    set_state_dict(model, opt, model_state_dict=state["model"], optim_state_dict=state["optim"])
    group = opt.param_groups[0]
    with NoiseRecorder(opt) as rec:
        loss_of(model, *batches(1, seed=4)[0]).backward()
        opt.step()
    return {"sigma": float(group["sigma"]), "adaptive_noise": bool(group["adaptive_noise"]),
            "level": rec.first_step_noise_rms()}


if __name__ == "__main__":
    worker_main(train if os.environ["PHASE"] == "train" else resume)
