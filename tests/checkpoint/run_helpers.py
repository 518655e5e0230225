"""Run folders as the training libraries write them, with real files (no library runs here:
tests/realworld does those). Each builder returns the names of the files that hold a legacy
UPGD state, relative to the folder."""
from __future__ import annotations

import dataclasses
import io
import json
import pickle
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from ckpt_helpers import FIXTURES, optim_state

G1 = FIXTURES / "optim" / "adaptive_upgd_g1.pt"


@dataclasses.dataclass
class TrainingArguments:  # what transformers pickles into training_args.bin
    output_dir: str = "out"
    learning_rate: float = 1e-4
    warmup_steps: int = 0


def rng_state() -> dict:
    """transformers' rng_state.pth: numpy's state is an ndarray of uint32 (numpy globals)."""
    return {"python": random.getstate(), "numpy": np.random.get_state(),
            "cpu": torch.random.get_rng_state()}


def scheduler_state() -> dict:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    return torch.optim.lr_scheduler.StepLR(opt, 10).state_dict()


def hf_checkpoint(folder: Path, legacy_format: bool = False) -> list[str]:
    """transformers Trainer's checkpoint-N/."""
    folder.mkdir(parents=True)
    if legacy_format:  # torch's pre-zip format, which older runs wrote
        torch.save(optim_state("adaptive_upgd_g1.pt"), folder / "optimizer.pt",
                   _use_new_zipfile_serialization=False)
    else:
        shutil.copy(G1, folder / "optimizer.pt")
    torch.save(rng_state(), folder / "rng_state.pth")
    torch.save(TrainingArguments(), folder / "training_args.bin")
    torch.save(scheduler_state(), folder / "scheduler.pt")
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": 2}))
    save_file({"w": torch.ones(4, 4)}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text("{}")
    return ["optimizer.pt"]


def accelerate_state(folder: Path) -> list[str]:
    """accelerate's save_state folder."""
    folder.mkdir(parents=True)
    shutil.copy(G1, folder / "optimizer.bin")
    torch.save(scheduler_state(), folder / "scheduler.bin")
    torch.save(rng_state(), folder / "random_states_0.pkl")
    save_file({"w": torch.ones(2)}, str(folder / "model.safetensors"))
    return ["optimizer.bin"]


def ray_experiment(folder: Path, trials: int = 2) -> list[str]:
    """A Ray Tune experiment: tuner.pkl, experiment state, trial dirs with checkpoints."""
    folder.mkdir(parents=True)
    (folder / "tuner.pkl").write_bytes(pickle.dumps({"trainable": "train_fn", "seen": {1, 2}}))
    (folder / "experiment_state-2026-01-01_00-00-00.json").write_text("{}")
    found = []
    for i in range(trials):
        trial = folder / f"train_fn_{i:05d}_{i}"
        ckpt = trial / "checkpoint_000001"
        ckpt.mkdir(parents=True)
        (trial / "params.json").write_text(json.dumps({"lr": 1e-4}))
        (trial / "params.pkl").write_bytes(pickle.dumps({"lr": 1e-4}))
        (trial / "result.json").write_text('{"loss": 1.0}\n')
        (trial / "progress.csv").write_text("loss\n1.0\n")
        torch.save({"step": 1, "optimizer": optim_state("adaptive_upgd_g1.pt")},
                   ckpt / "checkpoint.pt")
        found.append(f"{trial.name}/checkpoint_000001/checkpoint.pt")
    return found


def titan_step(folder: Path) -> list[str]:
    """torchtitan's checkpoint/step-N/: a flattened optimizer and a BytesIO train_state."""
    import torch.distributed.checkpoint as dcp
    from dcp_helpers import Net, legacy, options
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model = Net()
    msd, osd = get_state_dict(model, legacy(model), options=options(True))
    buf = io.BytesIO()
    torch.save({"step": 10}, buf)
    buf.seek(0)
    dcp.save({"model": msd, "optimizer": osd, "train_state": buf}, checkpoint_id=str(folder))
    return ["."]


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}
