"""A torchtitan-style run: ``<folder>/step-N/`` DCP checkpoints with the optimizer flattened under
``optimizer`` (``state.<fqn>.<key>``, ``param_groups.<fqn>.<key>``) beside a ``train_state``
whose losses are an ``io.BytesIO`` (as some torchtitan versions save them: DCP pickles it into a
bytes entry). Saved with a legacy optimizer, migrated as a whole folder, resumed with
``dcp.load`` + ``set_optimizer_state_dict`` from the ``-o`` copy and from the in-place folder.

Single process: DCP saves and loads without a process group."""
from __future__ import annotations

import io

import pytest
import torch
from runfolder_helpers import (G1AdaptiveUPGD, Packaged, assert_resumed, expected_sigmas, is_g1,
    migrate_run, tiny_model)

pytestmark = [pytest.mark.realworld, pytest.mark.filterwarnings(
    "ignore:torch.distributed is disabled:UserWarning")]

SAVE_EVERY, STEPS = 2, 4
LOSSES = [3.5, 2.25, 1.5, 1.0]


def _options():
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(flatten_optimizer_state_dict=True)


def _states(model, optimizer, step: int) -> dict:
    """What torchtitan hands ``dcp.save``: model, flattened optimizer, train state."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    losses = io.BytesIO()
    torch.save(LOSSES[:step], losses)
    return {"model": get_model_state_dict(model),
            "optimizer": get_optimizer_state_dict(model, optimizer, options=_options()),
            "train_state": {"step": step, "global_avg_losses": losses}}


def _train(run) -> dict:
    """Train STEPS steps, saving ``step-N/`` every SAVE_EVERY; the last optimizer state_dict."""
    import torch.distributed.checkpoint as dcp

    model = tiny_model()
    optimizer = G1AdaptiveUPGD(model.parameters())
    x = torch.randn(STEPS, 8, 6, generator=torch.Generator().manual_seed(0))
    for step in range(1, STEPS + 1):  # one minibatch a step
        batch = x[step - 1]
        torch.nn.functional.mse_loss(model(batch), batch.sum(1, keepdim=True)).backward()
        optimizer.step()
        optimizer.zero_grad()
        if step % SAVE_EVERY == 0:
            dcp.save(_states(model, optimizer, step), checkpoint_id=run / f"step-{step}")
    return optimizer.state_dict()


def _resume(folder) -> tuple[torch.optim.Optimizer, dict]:
    """torchtitan's resume: load into the fresh run's own state dicts, then set them."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    model = tiny_model()
    optimizer = Packaged(model.parameters())
    states = _states(model, optimizer, 0)
    dcp.load(states, checkpoint_id=folder / f"step-{STEPS}")
    set_model_state_dict(model, states["model"])
    set_optimizer_state_dict(model, optimizer, states["optimizer"], options=_options())
    return optimizer, states["train_state"]


def _assert_torchtitan_layout(folder) -> None:
    """Flattened by parameter name: tensors as tensor entries, numbers (and the G1 group keys)
    and the train state as bytes entries."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import BytesStorageMetadata, TensorStorageMetadata

    entries = FileSystemReader(str(folder)).read_metadata().state_dict_metadata
    kinds = {key: type(entry) for key, entry in entries.items()}
    assert kinds["optimizer.state.0.weight.first_moment"] is TensorStorageMetadata
    for key in ("optimizer.state.0.weight.step", "optimizer.param_groups.0.weight.sigma",
                "optimizer.param_groups.2.bias.adaptive_noise", "train_state.global_avg_losses"):
        assert kinds[key] is BytesStorageMetadata, key
    assert not any(key.endswith(".instant_noise_scale") for key in kinds)


def test_dcp_load_resumes_from_the_migrated_run_folder(tmp_path):
    run, out = tmp_path / "run", tmp_path / "out"
    saved = _train(run)
    assert is_g1(saved)
    want = expected_sigmas(saved)
    steps = [f"step-{n}" for n in range(SAVE_EVERY, STEPS + 1, SAVE_EVERY)]
    assert sorted(p.name for p in run.iterdir()) == steps
    for step in steps:
        assert sorted(p.name for p in (run / step).iterdir()) == [".metadata", "__0_0.distcp"]
    _assert_torchtitan_layout(run / steps[-1])

    # The migrated entries go to a new data file; .metadata points at them.
    migrate_run(run, out, {f"{step}/.metadata" for step in steps},
                added={f"{step}/__upgd_migrate_0.distcp" for step in steps})

    for folder in (out, run):
        optimizer, train_state = _resume(folder)
        assert_resumed(optimizer.param_groups, want)
        assert {s["step"] for s in optimizer.state.values()} == {STEPS}
        for key in ("first_moment", "sec_moment", "avg_utility"):
            assert all(torch.equal(optimizer.state[p][key], saved["state"][i][key])
                       for i, p in enumerate(optimizer.param_groups[0]["params"]))
        # The train state comes back as torchtitan saved it, its bytes untouched.
        assert train_state["step"] == STEPS
        train_state["global_avg_losses"].seek(0)
        assert torch.load(train_state["global_avg_losses"], weights_only=True) == LOSSES
