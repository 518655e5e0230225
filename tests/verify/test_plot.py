"""``verify --plot``: the lines drawn are verify's own per-step values, read back from the
Figure that was written (not from pixels)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from upgd_migrate.cli import main
from upgd_migrate.verify import levels, plot

pytest.importorskip("matplotlib", reason="matplotlib is not installed (the 'plot' extra)")

PPO = Path(__file__).resolve().parents[2] / "fixtures" / "containers" / "ppo.zip"
STEPS = 8


@pytest.fixture
def drawn(monkeypatch) -> list:
    """Each (files, Figure) that verify wrote: the real writer, watched."""
    seen: list = []
    real = plot.write

    def watched(files, path):
        fig = real(files, path)
        seen.append((files, fig))
        return fig
    monkeypatch.setattr(plot, "write", watched)
    return seen


def _states(path: Path) -> dict:
    """The optimizer states of ``path`` and verify's reports of them, computed anew."""
    from upgd_migrate.checkpoint.formats import open_checkpoint
    from upgd_migrate.verify.drive import verify_states

    slots = [(s.where, s.kind, s.state) for s in open_checkpoint(path, ()).slots]
    reports = verify_states(slots, steps=STEPS)
    return {where: (state, report) for (where, kind, state), report in zip(slots, reports)
            if kind == "optimizer"}


def _lines(ax) -> dict:
    return {line.get_label(): line for line in ax.get_lines()}


def test_the_png_holds_verify_s_series_before_and_after_migration(tmp_path, drawn, capsys):
    migrated = tmp_path / "ppo.zip"
    assert main(["checkpoint", str(PPO), "-o", str(migrated)]) == 1
    out = tmp_path / "verify.png"
    assert main(["verify", str(PPO), str(migrated), "--steps", str(STEPS),
                 "--plot", str(out)]) == 1  # the legacy state fails, as in the README
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (_, fig), = drawn
    rows = [fig.axes[i:i + 2] for i in range(0, len(fig.axes), 2)]
    assert len(rows) == 2  # one per optimizer state; the VGS states have nothing to plot
    for (left, right), path in zip(rows, (PPO, migrated)):
        (state, report), = _states(path).values()
        ratio, level = _lines(left), _lines(right)
        for name in ("unscaled", "x0.5", "x0.1", "VGS"):
            assert list(ratio[f"ratio {name}"].get_ydata()) == report.series["ratio"][name]
            assert len(report.series["ratio"][name]) == STEPS
        assert list(ratio["target sigma"].get_ydata()) == [report.metrics["target"]] * 2
        packaged = list(level["level packaged"].get_ydata())
        assert packaged == report.series["level"]
        pre = levels.pre_migration_level(state)
        assert list(level["level pre-migration"].get_ydata()) == [pre] * 2
        if path == PPO:  # "drop x0.251; ref spike x6.71", now as lines
            ref, _ = levels.reference_resume_level(state)
            assert list(level["level reference resume"].get_ydata()) == [ref]
            assert packaged[0] / pre == pytest.approx(0.251, abs=5e-4)
            assert ref / pre == pytest.approx(6.71, abs=5e-3)
        else:
            assert "level reference resume" not in level
            assert packaged[0] / pre == pytest.approx(1.15, abs=5e-3)
            assert report.metrics["target"] == pytest.approx(0.00460734, rel=1e-5)


def test_svg_too(tmp_path, drawn):
    out = tmp_path / "verify.svg"
    assert main(["verify", str(PPO), "--steps", "2", "--plot", str(out)]) == 1
    assert out.read_text().lstrip().startswith("<?xml")
    assert "<svg" in out.read_text()


def test_a_state_without_noise_leaves_an_empty_figure_with_a_note(tmp_path, drawn):
    fig = plot.figure([])
    assert not fig.axes and fig.texts[0].get_text() == "no noisy optimizer state to plot"


@pytest.mark.parametrize("name,message", [
    ("v.jpg", "{out}: --plot writes .png or .svg, not .jpg"),
    ("v", "{out}: --plot writes .png or .svg, not a file without suffix"),
])
def test_a_wrong_suffix_is_a_usage_error_before_any_run(tmp_path, capsys, drawn, name, message):
    out = tmp_path / name
    assert main(["verify", str(PPO), "--plot", str(out)]) == 2
    assert capsys.readouterr().err.strip() == message.format(out=out)
    assert not out.exists() and not drawn


def test_without_matplotlib_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    out = tmp_path / "v.png"
    assert main(["verify", str(PPO), "--plot", str(out)]) == 2
    assert capsys.readouterr().err == f"{out}: needs matplotlib: pip install 'upgd-migrate[plot]'\n"
    assert not out.exists()


def test_an_unwritable_plot_is_reported_and_exits_2(tmp_path, capsys):
    out = tmp_path / "missing" / "v.png"
    assert main(["verify", str(PPO), "--steps", "2", "--plot", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{out}: cannot write the plot: No such file or directory" in err
