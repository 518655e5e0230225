"""Lightning: a real Trainer fits with NoiseMonitorCallback; the CSVLogger's rows carry the
noise-to-update ratio at sigma and the VGS factor, on exactly the steps Lightning logs."""
from __future__ import annotations

import csv
import warnings

import pytest

pytestmark = pytest.mark.realworld

SIGMA = 0.05
RATIO = "upgd/noise_to_update_ratio"


def _fit(tmp_path, callback, upgd: bool = True, steps: int = 20, log_every: int = 5):
    import lightning as L
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from upgd_migrate.optim import AdaptiveUPGD, VarianceGradientScaler

    class Regressor(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.Tanh(),
                                           torch.nn.Linear(64, 1))
            # An attribute, not a submodule: the callback finds it by type.
            self.scaler = VarianceGradientScaler(self.net.parameters(), warmup_steps=3)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return torch.nn.functional.mse_loss(self.net(x), y)

        def on_before_optimizer_step(self, optimizer) -> None:
            self.scaler.scale_gradients()

        def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
            self.scaler.step()

        def configure_optimizers(self):
            if not upgd:
                return torch.optim.Adam(self.parameters())
            return AdaptiveUPGD(self.parameters(), lr=1e-3, sigma=SIGMA, adaptive_noise=True)

    warnings.filterwarnings("ignore", module="lightning")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, generator=g)
    data = DataLoader(TensorDataset(x, x.sum(1, keepdim=True) + torch.randn(64, 1, generator=g)),
                      batch_size=8)
    torch.manual_seed(0)
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", devices=1, log_every_n_steps=log_every,
                        logger=L.pytorch.loggers.CSVLogger(tmp_path, name="run"),
                        enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False, callbacks=[callback])
    trainer.fit(Regressor(), data)
    return trainer


def _rows(trainer) -> list[dict]:
    with open(trainer.logger.experiment.metrics_file_path, newline="") as f:
        return [r for r in csv.DictReader(f) if r.get(RATIO)]


def test_the_logged_rows_hold_the_ratio_at_sigma_on_lightnings_log_steps(tmp_path):
    from upgd_migrate.integrations.lightning import NoiseMonitorCallback

    rows = _rows(_fit(tmp_path, NoiseMonitorCallback()))
    assert [int(r["step"]) for r in rows] == [4, 9, 14, 19]  # every log_every_n_steps
    for row in rows:
        assert abs(float(row[RATIO]) / SIGMA - 1.0) < 0.10, row
        assert 0.1 <= float(row["vgs/scaling_factor"]) <= 1.0
        assert 0.26 < float(row["upgd/gate_mean"]) < 0.74
    assert float(rows[0]["vgs/normalized_variance"]) > 0.0  # the module's VGS was found


def test_every_k_logs_its_own_steps(tmp_path):
    from upgd_migrate.integrations.lightning import NoiseMonitorCallback

    rows = _rows(_fit(tmp_path, NoiseMonitorCallback(every=4), steps=12, log_every=1))
    # Lightning writes the newest logged value on each of its log steps: new values come on
    # the optimizer's steps 1, 5, 9 (Lightning's steps 0, 4, 8) and repeat until the next.
    assert [int(r["step"]) for r in rows] == list(range(12))
    changes = [int(r["step"]) for prev, r in zip([None, *rows], rows)
               if prev is None or r[RATIO] != prev[RATIO]]
    assert changes == [0, 4, 8]
    assert all(abs(float(r[RATIO]) / SIGMA - 1.0) < 0.10 for r in rows)


def test_a_module_without_upgd_gets_a_clear_error(tmp_path):
    from upgd_migrate.integrations.lightning import NoiseMonitorCallback

    with pytest.raises(TypeError, match=r"Regressor.configure_optimizers returns Adam, not a "
                                        r"UPGD-family optimizer"):
        _fit(tmp_path, NoiseMonitorCallback(), upgd=False, steps=2)
