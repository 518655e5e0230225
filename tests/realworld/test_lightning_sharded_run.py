"""Lightning's sharded checkpoint folders (``<name>.ckpt/`` holding DCP files and ``meta.pt``),
written by ``ModelParallelStrategy`` (FSDP2) on CPU with one gloo rank, saved with a legacy
optimizer: the run folder migrates as a whole, and ``Trainer.fit(ckpt_path=...)`` resumes from
the ``-o`` copy and from the in-place folder with adaptive noise at the calibrated sigma.

Lightning's ``FSDPStrategy`` (FSDP1) refuses a CPU accelerator ("requires a GPU accelerator"),
so the FSDP2 strategy stands for both: it writes the same sharded layout."""
from __future__ import annotations

import pytest
import torch
from runfolder_helpers import (G1AdaptiveUPGD, Packaged, assert_resumed, expected_sigmas, is_g1,
    migrate_run)

pytestmark = [pytest.mark.realworld, pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]

SAVE_EVERY, FIRST_STEPS, MORE_STEPS = 2, 4, 2
LAST = f"step={FIRST_STEPS}.ckpt"


@pytest.fixture
def one_rank(monkeypatch):
    """A gloo process group of one rank on 127.0.0.1 and a free port, gone after the test."""
    import torch.distributed as dist
    from lightning.fabric.plugins.environments.lightning import find_free_network_port

    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available in this torch build")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(find_free_network_port()))
    yield
    if dist.is_initialized():
        dist.destroy_process_group()


def _module(optimizer_class: type):
    from lightning.pytorch.callbacks import Callback
    from lightning_trainer import Regressor
    from torch.distributed.fsdp import fully_shard

    class Sharded(Regressor):
        def configure_model(self) -> None:
            fully_shard(self.net, mesh=self.device_mesh["data_parallel"])

        def configure_optimizers(self):
            return optimizer_class(self.parameters())

    class LastState(Callback):
        """The optimizer state at the end of training, its DTensors as plain tensors."""

        def on_train_end(self, trainer, pl_module) -> None:
            sd = trainer.optimizers[0].state_dict()
            self.state = {"param_groups": sd["param_groups"], "state": {
                pid: {k: v.full_tensor() if hasattr(v, "full_tensor") else v
                      for k, v in entry.items()} for pid, entry in sd["state"].items()}}

    return Sharded(), LastState()


def _fit(folder, max_steps: int, optimizer_class: type, ckpt_path=None, callbacks=()):
    import lightning as L
    from lightning.pytorch.strategies import ModelParallelStrategy
    from lightning_trainer import data, quiet

    quiet()
    torch.manual_seed(0)
    module, last = _module(optimizer_class)
    saver = L.pytorch.callbacks.ModelCheckpoint(dirpath=folder, filename="{step}", save_top_k=-1,
                                                every_n_train_steps=SAVE_EVERY)
    trainer = L.Trainer(max_steps=max_steps, accelerator="cpu", devices=1, logger=False,
                        strategy=ModelParallelStrategy(save_distributed_checkpoint=True),
                        enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[saver, last, *callbacks])
    trainer.fit(module, data(), ckpt_path=ckpt_path)
    return trainer, last


def test_fit_resumes_from_the_migrated_sharded_run(tmp_path, one_rank):
    from lightning_trainer import ResumeProbe

    run, out = tmp_path / "run", tmp_path / "out"
    _, last = _fit(run, FIRST_STEPS, G1AdaptiveUPGD)
    assert is_g1(last.state)
    want = expected_sigmas(last.state)
    saves = [f"step={n}.ckpt" for n in range(SAVE_EVERY, FIRST_STEPS + 1, SAVE_EVERY)]
    assert sorted(p.name for p in run.iterdir()) == saves
    for save in saves:
        assert sorted(p.name for p in (run / save).iterdir()) == [
            ".metadata", "__0_0.distcp", "meta.pt"]

    migrate_run(run, out, {f"{save}/.metadata" for save in saves},
                added={f"{save}/__upgd_migrate_0.distcp" for save in saves})

    for folder in (out, run):
        probe = ResumeProbe()
        trainer, _ = _fit(tmp_path / f"resumed-{folder.name}", FIRST_STEPS + MORE_STEPS,
                          Packaged, ckpt_path=folder / LAST, callbacks=[probe])
        assert probe.optimizer_type is Packaged and probe.global_step == FIRST_STEPS
        assert_resumed([probe.group], want[:1])
        assert {entry["step"] for entry in probe.state.values()} == {FIRST_STEPS}
        assert trainer.global_step == FIRST_STEPS + MORE_STEPS
