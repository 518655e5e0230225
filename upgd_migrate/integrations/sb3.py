"""stable-baselines3: record the noise metrics into the model's logger.

``model.learn(total, callback=NoiseMonitorCallback())``: every ``every`` gradient steps the
metrics of :mod:`upgd_migrate.optim.monitor` go to ``model.logger.record_mean``, so each dumped
row (stdout, CSV, TensorBoard: whatever the logger writes to) holds their mean over the logged
steps of that training round.
"""
from __future__ import annotations

from typing import Optional

from stable_baselines3.common.callbacks import BaseCallback

from upgd_migrate.integrations._find import describe, find_optimizers, find_vgs
from upgd_migrate.optim.monitor import DEFAULT_EVERY, NoiseMonitor


class NoiseMonitorCallback(BaseCallback):
    """Watch the model's UPGD-family optimizers (and its VGS) while it learns.

    The optimizers are found on the policy (``policy.optimizer``, and the actor's and critic's
    of off-policy algorithms); the VGS is ``vgs`` if given, else the first
    ``VarianceGradientScaler`` among the model's attributes. A model without a UPGD-family
    optimizer raises ``TypeError`` when training starts.
    """

    def __init__(self, vgs=None, every: int = DEFAULT_EVERY, verbose: int = 0) -> None:
        super().__init__(verbose)
        self.vgs, self.every = vgs, every
        self.monitor: Optional[NoiseMonitor] = None

    def _on_training_start(self) -> None:
        policy = self.model.policy
        optimizers = find_optimizers([policy])
        if not optimizers:
            raise TypeError(
                f"NoiseMonitorCallback: {type(self.model).__name__} trains with "
                f"{describe([policy])}, not a UPGD-family optimizer "
                "(pass policy_kwargs={'optimizer_class': AdaptiveUPGD, ...})")
        vgs = self.vgs if self.vgs is not None else find_vgs([self.model])
        self.monitor = NoiseMonitor(optimizers, vgs=vgs, every=self.every,
                                    callback=self._record)

    def _record(self, step: int, metrics: dict) -> None:
        for key, value in metrics.items():
            self.logger.record_mean(key, value)

    def _on_step(self) -> bool:
        return True

    def _on_training_end(self) -> None:
        if self.monitor is not None:
            self.monitor.close()
            self.monitor = None
