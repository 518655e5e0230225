"""A Lightning module trained with the packaged AdaptiveUPGD at fixed noise, as teams write one.

Imported inside the tests, so collecting them never needs Lightning.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from upgd_migrate.optim import AdaptiveUPGD, NoiseRecorder

SIGMA_ABS = 0.001
FIRST_STEPS, MORE_STEPS = 24, 12


class Regressor(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.Tanh(),
                                       torch.nn.Linear(64, 1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self):
        return AdaptiveUPGD(self.parameters(), lr=1e-3, sigma=SIGMA_ABS, adaptive_noise=False)


class ResumeProbe(L.Callback):
    """What the optimizer holds when training (re)starts, and the noise of the steps after."""

    def on_train_start(self, trainer, pl_module) -> None:
        optimizer = trainer.optimizers[0]
        self.optimizer_type = type(optimizer)
        self.global_step = trainer.global_step
        self.group = {k: v for k, v in optimizer.param_groups[0].items() if k != "params"}
        # Cloned now: the steps that follow update these tensors in place.
        self.state = {k: {n: v.clone() if torch.is_tensor(v) else v for n, v in entry.items()}
                      for k, entry in optimizer.state_dict()["state"].items()}
        self.recorder = NoiseRecorder(optimizer).__enter__()

    def on_train_end(self, trainer, pl_module) -> None:
        self.recorder.__exit__(None, None, None)


def data() -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, generator=g)
    return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=8)


def trainer(max_steps: int, callbacks: list, **kwargs) -> L.Trainer:
    return L.Trainer(max_steps=max_steps, accelerator="cpu", devices=1, logger=False,
                     enable_progress_bar=False, enable_model_summary=False,
                     callbacks=callbacks, **kwargs)


def quiet() -> None:
    # Lightning's advice on dataloader workers and its tips are noise in a test log.
    warnings.filterwarnings("ignore", module="lightning")
    warnings.filterwarnings("ignore", module="pytorch_lightning")


def train(folder: Path) -> tuple[Path, ResumeProbe]:
    """Train FIRST_STEPS steps; a ModelCheckpoint writes ``folder/last.ckpt``."""
    quiet()
    torch.manual_seed(0)
    saver = L.pytorch.callbacks.ModelCheckpoint(dirpath=folder, filename="last",
                                                every_n_train_steps=FIRST_STEPS)
    probe = ResumeProbe()
    trainer(FIRST_STEPS, [saver, probe], enable_checkpointing=True).fit(Regressor(), data())
    return folder / "last.ckpt", probe


def resume(ckpt: Path) -> tuple[L.Trainer, ResumeProbe]:
    """Fit a fresh module from ``ckpt`` for MORE_STEPS more steps."""
    quiet()
    torch.manual_seed(1)
    probe = ResumeProbe()
    fitted = trainer(FIRST_STEPS + MORE_STEPS, [probe], enable_checkpointing=False)
    fitted.fit(Regressor(), data(), ckpt_path=ckpt)
    return fitted, probe
