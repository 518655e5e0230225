"""stable-baselines3: a real PPO learns with NoiseMonitorCallback; its CSV, stdout and
TensorBoard logs carry the noise-to-update ratio at sigma and the VGS factor."""
from __future__ import annotations

import csv

import pytest

pytestmark = pytest.mark.realworld

SIGMA = 0.05
RATIO = "upgd/noise_to_update_ratio"


def _ppo(with_upgd: bool = True):
    from stable_baselines3 import PPO

    from upgd_migrate.optim import AdaptiveUPGD, VarianceGradientScaler

    class ScaledPPO(PPO):
        """PPO whose gradients a VGS scales, kept as ``self.scaler`` for the callback to find."""

        def _setup_model(self) -> None:
            super()._setup_model()
            self.scaler = VarianceGradientScaler(self.policy.parameters(), warmup_steps=4)
            # PPO.train() has no hook between backward() and the step: scale just before it.
            opt = self.policy.optimizer
            opt.register_step_pre_hook(lambda *_: self.scaler.scale_gradients() and None)
            opt.register_step_post_hook(lambda *_: self.scaler.step())

    kwargs = {"optimizer_class": AdaptiveUPGD,
              "optimizer_kwargs": {"sigma": SIGMA, "adaptive_noise": True}} if with_upgd else {}
    return ScaledPPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=16, n_epochs=4,
                     device="cpu", seed=0, verbose=0, policy_kwargs=kwargs)


def test_every_logged_row_has_the_ratio_at_sigma_and_the_vgs_factor(tmp_path, capsys):
    from stable_baselines3.common.logger import configure

    from upgd_migrate.integrations.sb3 import NoiseMonitorCallback

    formats = ["csv", "stdout"]
    try:
        import tensorboard  # noqa: F401
        formats.append("tensorboard")
    except ImportError:
        pass
    model = _ppo()
    model.set_logger(configure(str(tmp_path), formats))
    callback = NoiseMonitorCallback(every=3)
    model.learn(320, callback=callback)  # 5 rounds of 16 gradient steps
    assert callback.monitor is None  # detached at the end
    with open(tmp_path / "progress.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get(RATIO)]
    assert len(rows) >= 4  # the first dump comes before any training
    for row in rows:
        assert abs(float(row[RATIO]) / SIGMA - 1.0) < 0.10, row
        assert 0.1 <= float(row["vgs/scaling_factor"]) <= 1.0
        assert float(row["vgs/normalized_variance"]) >= 0.0
        assert 0.26 < float(row["upgd/gate_mean"]) < 0.74
        assert float(row["upgd/noise_rms"]) == pytest.approx(
            float(row[RATIO]) * float(row["upgd/update_rms"]), rel=0.25)
    assert any(float(r["vgs/scaling_factor"]) < 1.0 for r in rows)  # the VGS was found and cut
    assert "noise_to_update_ratio" in capsys.readouterr().out
    if "tensorboard" in formats:
        from tensorboard.backend.event_processing.event_accumulator import (
            EventAccumulator,
        )

        events = EventAccumulator(str(next(tmp_path.glob("events.out.tfevents.*")))).Reload()
        values = [e.value for e in events.Scalars(RATIO)]
        assert len(values) == len(rows)
        assert values == pytest.approx([float(r[RATIO]) for r in rows], rel=1e-5)


def test_a_model_without_upgd_gets_a_clear_error(tmp_path):
    from stable_baselines3.common.logger import configure

    from upgd_migrate.integrations.sb3 import NoiseMonitorCallback

    model = _ppo(with_upgd=False)
    model.set_logger(configure(str(tmp_path), []))  # not SB3's default folder in the temp folder
    with pytest.raises(TypeError, match="ScaledPPO trains with Adam, not a UPGD-family "
                                        "optimizer"):
        model.learn(64, callback=NoiseMonitorCallback())
