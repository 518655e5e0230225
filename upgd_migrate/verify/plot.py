"""``verify --plot FILE.png|.svg``: what verify measured, drawn per optimizer state.

Left: the noise-to-update ratio of each of the K steps, unscaled and with gradients scaled by
0.5, 0.1 and the VGS, against the target sigma (adaptive noise). Right: the packaged
optimizer's noise level per step against the pre-migration level and, for a legacy adaptive
state, the level the code that wrote it resumes at, so a drop or a spike is seen, not read.

Every line carries a label (``ratio unscaled``, ``ratio x0.5``, ..., ``target sigma``,
``level packaged``, ``level pre-migration``, ``level reference resume``): the figure itself is
the record of what was drawn. matplotlib is an optional extra (``upgd-migrate[plot]``).
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Sequence

from upgd_migrate.fileio import atomic_write

FORMATS = (".png", ".svg")
NEEDS = "needs matplotlib: pip install 'upgd-migrate[plot]'"
COLORS = {"unscaled": "#1f77b4", "x0.5": "#2ca02c", "x0.1": "#9467bd", "VGS": "#d62728"}
STYLES = [(4.0, "-"), (2.6, "--"), (1.8, "-."), (1.0, ":")]


def problem(path: Path) -> str | None:
    """Why ``path`` cannot be written as a plot (one line, naming it), or None."""
    if path.suffix.lower() not in FORMATS:
        return f"{path}: --plot writes .png or .svg, not {path.suffix or 'a file without suffix'}"
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return f"{path}: {NEEDS}"
    # Checked before the runs, which take a while. A missing folder is not created (as
    # savefig does not): a mistyped folder name must not become a new folder.
    folder = path.parent
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        return f"{path}: cannot write the plot: folder {folder} {what}"
    return None


def _plotted(files: Sequence[dict]) -> list[tuple[str, Any]]:
    return [(f["path"], r) for f in files for r in f["reports"] if r.series.get("ratio")]


def _ratio_axes(ax, report) -> None:
    # Drawn widest first, each in its own dash: lines that coincide (no amplification) stay
    # visible one over the other.
    for (name, values), (width, dash) in zip(report.series["ratio"].items(), STYLES):
        ax.plot(range(1, len(values) + 1), values, label=f"ratio {name}", lw=width, ls=dash,
                color=COLORS.get(name))
    target = report.metrics.get("target")
    if target:
        ax.axhline(target, color="black", ls="--", lw=1, label="target sigma")
    top = max(v for values in report.series["ratio"].values() for v in values)
    ax.set_ylim(0, max(2 * (target or 0), 1.15 * top))
    amps = report.metrics.get("amplification") or {}
    factors = report.series.get("vgs_factor") or [1.0]
    ax.set_title("noise-to-update ratio; amplification " +
                 "/".join(f"{a:.3f}" for a in amps.values()) +
                 f" (VGS factor {min(factors):.3g}-{max(factors):.3g})", fontsize=9, loc="left")
    ax.set_xlabel("verification step", fontsize=8)
    ax.legend(fontsize=7, ncol=3, loc="lower right")


def _level_axes(ax, report) -> None:
    levels = report.series["level"]
    steps = range(1, len(levels) + 1)
    ax.plot(steps, levels, color=COLORS["unscaled"], lw=1.3, marker="o", ms=2.5,
            label="level packaged")
    pre, ref = report.metrics.get("pre_migration"), report.metrics.get("reference_resume")
    if pre:
        ax.axhline(pre, color="black", ls="--", lw=1, label="level pre-migration")
        ax.annotate(f"first step x{levels[0] / pre:.3g}", (1, levels[0]), fontsize=8,
                    xytext=(8, -12), textcoords="offset points")
    if ref:
        ax.plot([1], [ref], color="#d62728", marker="v", ms=8, ls="none",
                label="level reference resume")
        text = f"reference resume x{ref / pre:.3g}" if pre else "reference resume"
        ax.annotate(text, (1, ref), fontsize=8, xytext=(8, -3), textcoords="offset points")
    ax.set_yscale("log")
    ax.set_title("noise level per element (RMS)", fontsize=9, loc="left")
    ax.set_xlabel("verification step", fontsize=8)
    ax.legend(fontsize=7)


def figure(files: Sequence[dict]):
    """A matplotlib Figure with one row per optimizer state verified in ``files``
    (``[{"path": str, "reports": [StateReport, ...]}, ...]``)."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no display needed

    rows = _plotted(files)
    fig = Figure(figsize=(11, 3.2 * max(len(rows), 1)), dpi=80)
    if not rows:
        fig.text(0.5, 0.5, "no noisy optimizer state to plot", ha="center", va="center")
        return fig
    axes = fig.subplots(len(rows), 2, squeeze=False)
    for (path, report), (left, right) in zip(rows, axes):
        _ratio_axes(left, report)
        _level_axes(right, report)
        for ax in (left, right):
            ax.tick_params(labelsize=8)
            ax.grid(alpha=0.3)
        left.annotate(f"{path}: {report.where} ({report.cls} {report.generation}, "
                      f"{'ok' if report.ok else 'FAIL'})", (0, 1.13), fontsize=9,
                      xycoords="axes fraction", weight="bold")
    fig.tight_layout()
    return fig


def write(files: Sequence[dict], path: Path):
    """Draw ``files`` into ``path`` (format from its suffix), atomically; return the Figure."""
    fig = figure(files)
    buffer = io.BytesIO()
    fig.savefig(buffer, format=path.suffix.lower().lstrip("."))
    atomic_write(path, buffer.getvalue())
    return fig
