"""Plain PyTorch: a training loop writes the noise metrics to a real SummaryWriter; the event
file read back holds them. docs/tools/tensorboard_screenshot.py screenshots TensorBoard showing
this run (UPGD_TENSORBOARD_LOGDIR: where the run writes, instead of a temporary folder)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from upgd_migrate.optim import AdaptiveUPGD, VarianceGradientScaler

SIGMA = 0.05
STEPS, EVERY = 240, 4


class Loop:
    """A plain training loop holding its optimizer and VGS as attributes, as scripts do."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.Tanh(),
                                       torch.nn.Linear(64, 64), torch.nn.Tanh(),
                                       torch.nn.Linear(64, 1))
        self.optimizer = AdaptiveUPGD(self.net.parameters(), lr=3e-3, sigma=SIGMA,
                                      adaptive_noise=True)
        self.vgs = VarianceGradientScaler(self.net.parameters(), warmup_steps=40)
        self.data = torch.Generator().manual_seed(1)

    def step(self) -> None:
        x = torch.randn(8, 16, generator=self.data)  # small noisy batches: a VGS cuts them
        y = x[:, :4].sum(1, keepdim=True) + torch.randn(8, 1, generator=self.data)
        self.optimizer.zero_grad()
        torch.nn.functional.mse_loss(self.net(x), y).backward()
        self.vgs.scale_gradients()
        self.optimizer.step()
        self.vgs.step()


@pytest.mark.realworld
def test_the_event_file_holds_each_logged_step(tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (an optional "
                                              "dependency: pip install tensorboard)")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    from upgd_migrate.integrations.tensorboard import watch

    loop, written = Loop(), []
    logdir = Path(os.environ.get("UPGD_TENSORBOARD_LOGDIR") or tmp_path / "run")
    writer = SummaryWriter(str(logdir))
    with watch(writer, loop, every=EVERY, first_step=100) as monitor:  # finds both by itself
        monitor.callbacks.append(lambda step, m: written.append((100 + step, m)))
        for _ in range(STEPS):
            loop.step()
    writer.close()
    events = EventAccumulator(str(logdir)).Reload()
    assert set(events.Tags()["scalars"]) == set(written[0][1])
    for tag in written[0][1]:
        scalars = events.Scalars(tag)
        assert [s.step for s in scalars] == [step for step, _ in written]
        assert [s.value for s in scalars] == pytest.approx([m[tag] for _, m in written], rel=1e-6)
    ratios = [s.value for s in events.Scalars("upgd/noise_to_update_ratio")]
    assert all(abs(r / SIGMA - 1.0) < 0.10 for r in ratios)
    factors = [s.value for s in events.Scalars("vgs/scaling_factor")]
    assert factors[0] == 1.0 and min(factors) < 0.5  # warmup, then the VGS cuts


class _Writer:
    def add_scalar(self, tag, value, step) -> None:
        raise AssertionError("nothing to write")


def test_no_upgd_optimizer_is_a_clear_error():
    from upgd_migrate.integrations.tensorboard import watch

    class Script:
        def __init__(self) -> None:
            self.optimizer = torch.optim.SGD([torch.nn.Parameter(torch.ones(2))], lr=0.1)

    with pytest.raises(TypeError, match=r"watch: no UPGD-family optimizer in Script \(SGD\)"):
        watch(_Writer(), Script())


def test_no_writer_measures_and_writes_nothing():
    """The ranks that do not write (FSDP2: every rank must watch) pass None."""
    from upgd_migrate.integrations.tensorboard import watch

    loop = Loop()
    with watch(None, loop, every=2) as monitor:
        assert monitor.callbacks == []
        for _ in range(4):
            loop.step()
        assert monitor.latest["upgd/noise_to_update_ratio"] == pytest.approx(SIGMA, rel=0.1)


def test_a_writer_without_add_scalar_is_a_clear_error():
    from upgd_migrate.integrations.tensorboard import watch

    with pytest.raises(TypeError, match=r"watch: the writer \(str\) has no add_scalar"):
        watch("runs/exp", Loop())
