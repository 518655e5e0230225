"""Lightning: log the noise metrics through the module's ``log``.

``Trainer(callbacks=[NoiseMonitorCallback()])``: by default the metrics are taken on exactly
the steps Lightning writes to its loggers (every ``log_every_n_steps``), so no logged row misses
them and no unlogged step pays for them; ``every=k`` takes them every k optimizer steps instead
(Lightning then writes the newest value on each of its own log steps).
"""
from __future__ import annotations

from typing import Optional

import lightning as L

from upgd_migrate.integrations._find import describe, find_optimizers, find_vgs
from upgd_migrate.optim.monitor import NoiseMonitor


class NoiseMonitorCallback(L.Callback):
    """Watch the trainer's UPGD-family optimizers (and a VGS) and ``pl_module.log`` them.

    The VGS is ``vgs`` if given, else the first ``VarianceGradientScaler`` among the module's
    attributes. A module whose optimizers are not UPGD-family raises ``TypeError`` when
    training starts.
    """

    def __init__(self, vgs=None, every: Optional[int] = None) -> None:
        self.vgs, self.every = vgs, every
        self.monitor: Optional[NoiseMonitor] = None

    def on_train_start(self, trainer, pl_module) -> None:
        optimizers = find_optimizers([trainer.optimizers])
        if not optimizers:
            raise TypeError(
                f"NoiseMonitorCallback: {type(pl_module).__name__}.configure_optimizers returns "
                f"{describe([trainer.optimizers])}, not a UPGD-family optimizer")
        vgs = self.vgs if self.vgs is not None else find_vgs([pl_module])
        self.monitor = NoiseMonitor(optimizers, vgs=vgs, every=self.every)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        # Runs inside optimizer.step(closure), after backward: arm() observes this very step.
        # global_step counts the steps before this one; Lightning writes its loggers when
        # (steps done, this one included) % log_every_n_steps == 0.
        every = trainer.log_every_n_steps
        if self.every is None and self.monitor is not None and every and \
                (trainer.global_step + 1) % every == 0:
            self.monitor.arm(getattr(optimizer, "optimizer", optimizer))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        metrics = self.monitor.pop() if self.monitor is not None else None
        if metrics:
            pl_module.log_dict(metrics, on_step=True, on_epoch=False)

    def on_train_end(self, trainer, pl_module) -> None:
        if self.monitor is not None:
            self.monitor.close()
            self.monitor = None
