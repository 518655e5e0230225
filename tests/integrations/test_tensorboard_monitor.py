"""Plain PyTorch: a training loop writes the noise metrics to a real SummaryWriter; the event
file read back holds them. The run also renders the picture docs/monitor.md shows."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from upgd_migrate.optim import AdaptiveUPGD, VarianceGradientScaler

SIGMA = 0.05
STEPS, EVERY = 240, 4
DOCS_IMAGE = Path(__file__).resolve().parents[2] / "docs" / "img" / "tensorboard.png"


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
    writer = SummaryWriter(str(tmp_path / "run"))
    with watch(writer, loop, every=EVERY, first_step=100) as monitor:  # finds both by itself
        monitor.callbacks.append(lambda step, m: written.append((100 + step, m)))
        for _ in range(STEPS):
            loop.step()
    writer.close()
    events = EventAccumulator(str(tmp_path / "run")).Reload()
    assert set(events.Tags()["scalars"]) == set(written[0][1])
    for tag in written[0][1]:
        scalars = events.Scalars(tag)
        assert [s.step for s in scalars] == [step for step, _ in written]
        assert [s.value for s in scalars] == pytest.approx([m[tag] for _, m in written], rel=1e-6)
    ratios = [s.value for s in events.Scalars("upgd/noise_to_update_ratio")]
    assert all(abs(r / SIGMA - 1.0) < 0.10 for r in ratios)
    factors = [s.value for s in events.Scalars("vgs/scaling_factor")]
    assert factors[0] == 1.0 and min(factors) < 0.5  # warmup, then the VGS cuts
    _render(events, tmp_path / "tensorboard.png")


def _render(events, out: Path) -> None:
    """The logged scalars as read back from the event file, drawn with matplotlib (this
    machine has no browser for a screenshot of the TensorBoard page itself)."""
    pytest.importorskip("matplotlib", reason="matplotlib is not installed")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("upgd/noise_to_update_ratio", SIGMA), ("vgs/scaling_factor", None),
              ("upgd/update_rms", None), ("upgd/noise_rms", None)]
    fig, axes = plt.subplots(2, 2, figsize=(8, 4.6), dpi=80, sharex=True)
    for ax, (tag, target) in zip(axes.flat, panels):
        scalars = events.Scalars(tag)
        ax.plot([s.step for s in scalars], [s.value for s in scalars], color="#e8710a", lw=1.4)
        if target is not None:
            ax.axhline(target, color="#425066", ls="--", lw=1, label=f"sigma = {target}")
            ax.set_ylim(0, 2 * target)
            ax.legend(loc="lower right", fontsize=8)
        ax.set_title(tag, fontsize=9, loc="left")
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
    fig.suptitle("TensorBoard scalars of tests/integrations/test_tensorboard_monitor.py "
                 "(read back from the event file)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    assert out.stat().st_size < 150_000
    if os.environ.get("UPGD_WRITE_DOCS_IMAGES"):
        DOCS_IMAGE.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out, DOCS_IMAGE)


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
