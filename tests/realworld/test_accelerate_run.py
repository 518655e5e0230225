"""accelerate: ``save_state(dir)`` and automatic naming (``checkpoints/checkpoint_N/``) saved with a
legacy optimizer migrate as whole folders, and ``accelerator.load_state`` resumes from the ``-o``
copy and from the in-place folder with adaptive noise at the calibrated sigma."""
from __future__ import annotations

import itertools

import pytest
import torch
from runfolder_helpers import (LR, SIGMA_ABS, G1AdaptiveUPGD, Packaged, assert_resumed,
    expected_sigmas, is_g1, migrate_run, tiny_model)

pytestmark = pytest.mark.realworld

STEPS = 3
AUTOMATIC = "checkpoints/checkpoint_{}"


@pytest.fixture(autouse=True)
def fresh_state():
    """accelerate keeps one process-wide state: each test starts and ends with none."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)
    yield
    AcceleratorState._reset_state(True)


def _accelerator(project=None):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import ProjectConfiguration

    AcceleratorState._reset_state(True)  # one Accelerator per run, as in a training script
    if project is None:
        return Accelerator(cpu=True)
    config = ProjectConfiguration(project_dir=str(project), automatic_checkpoint_naming=True)
    return Accelerator(cpu=True, project_config=config)


def _prepared(accelerator, optimizer_class: type) -> tuple:
    """(model, optimizer, data, schedule) of a tiny regression, through ``prepare``."""
    model = tiny_model()
    optimizer = optimizer_class(model.parameters(), lr=LR, sigma=SIGMA_ABS)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    x = torch.randn(32, 6, generator=torch.Generator().manual_seed(0))
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True)),
                                       batch_size=8)
    return accelerator.prepare(model, optimizer, data, schedule)


def _train(accelerator, parts: tuple, steps: int) -> None:
    model, optimizer, data, schedule = parts
    for _, (x, y) in zip(range(steps), itertools.cycle(data)):
        accelerator.backward(torch.nn.functional.mse_loss(model(x), y))
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()


def _save(run, automatic: bool) -> str:
    """Train and save as a script does; the folder (relative to ``run``) of the last save."""
    accelerator = _accelerator(run if automatic else None)
    parts = _prepared(accelerator, G1AdaptiveUPGD)
    _train(accelerator, parts, STEPS)
    if not automatic:
        accelerator.save_state(str(run))
        return "."
    accelerator.save_state()
    _train(accelerator, parts, STEPS)
    accelerator.save_state()
    return AUTOMATIC.format(1)


@pytest.mark.parametrize("automatic", [False, True], ids=["save_state", "automatic_naming"])
def test_load_state_resumes_from_the_migrated_folder(tmp_path, automatic):
    run, out = tmp_path / "run", tmp_path / "out"
    last = _save(run, automatic)
    saves = [AUTOMATIC.format(0), AUTOMATIC.format(1)] if automatic else ["."]
    for save in saves:
        assert sorted(p.name for p in (run / save).iterdir()) == [
            "model.safetensors", "optimizer.bin", "random_states_0.pkl", "scheduler.bin"]
    saved = torch.load(run / last / "optimizer.bin", weights_only=True)
    assert is_g1(saved)
    want = expected_sigmas(saved)
    steps = STEPS * len(saves)

    migrate_run(run, out, {(run / save / "optimizer.bin").relative_to(run).as_posix()
                           for save in saves})

    for folder in (out, run):
        accelerator = _accelerator(folder if automatic else None)
        parts = _prepared(accelerator, Packaged)
        # Automatic naming loads the newest checkpoints/checkpoint_N of the project.
        accelerator.load_state(None if automatic else str(folder))
        optimizer = parts[1].optimizer  # inside accelerate's wrapper
        assert type(optimizer) is Packaged
        assert_resumed(optimizer.param_groups, want)
        assert {s["step"] for s in optimizer.state.values()} == {steps}
        _train(accelerator, parts, 1)
        assert {s["step"] for s in optimizer.state.values()} == {steps + 1}
        assert all(torch.isfinite(p).all() for p in parts[0].parameters())
