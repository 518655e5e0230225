"""``run_verify`` behind the ``verify`` command, and the ``checkpoint --verify`` pass."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import click

from upgd_migrate.checkpoint import pipeline as P
from upgd_migrate.checkpoint import runfolder
from upgd_migrate.checkpoint.formats import loaded
from upgd_migrate.errors import UpgdMigrateError
from upgd_migrate.report import envelope, plural
from upgd_migrate.verify import render
from upgd_migrate.verify.drive import Check, verify_states


def verify_migrated(results: list[P.FileResult]) -> tuple[list[dict], list[str]]:
    """Verify what was migrated (or would be): the states in memory, not the files."""
    out, lines = [], []
    for r in results:
        if r.checkpoint is None:
            continue
        slots = [(s.where, slot.kind, loaded(r.checkpoint, s.result.state))
                 for s, slot in zip(r.states, r.checkpoint.slots)]
        reports, _ = _split(verify_states(slots))
        lines += render.verify_text(str(r.output or r.path), reports)
        out.append({"path": str(r.output or r.path),
                    "states": [render.report_json(x) for x in reports]})
    return out, lines


def _config_check(reports, slots, kwargs: dict) -> None:
    from upgd_migrate.verify.config import mismatches

    for report, (_, kind, state) in zip(reports, slots):
        if kind != "optimizer" or report.cls in (None, "-"):
            continue
        diff = mismatches(kwargs, state)
        report.checks.append(Check("config", not diff, "; ".join(diff) + " (the checkpoint's "
                                   "values win on resume)" if diff else "config agrees"))


def _verify_file(path: Path, cfg, steps: int, seed: int, allow_globals, device: str,
                 found: Optional[runfolder.Found] = None) -> dict:
    found = found or runfolder.Found(Path(path), Path(Path(path).name), "torch", False)
    ckpt = runfolder.open_found(found, allow_globals)
    slots = [(s.where, s.kind, loaded(ckpt, s.state)) for s in ckpt.slots]
    kwargs, vgs_cfg = cfg if cfg else ({}, None)
    reports = verify_states(slots, steps, seed, vgs_cfg, device)
    if cfg:
        _config_check(reports, slots, kwargs)
    return {"path": str(path), "container": ckpt.container, "reports": reports}


def _split(reports) -> tuple[list, list[str]]:
    """(the reports of UPGD-family and VGS states, where the other optimizers were)."""
    skipped = [r.where for r in reports if r.kind == "optimizer" and r.cls in (None, "-")]
    return [r for r in reports if r.where not in skipped], skipped


def _verify_all(files_found, cfg, steps, seed, allow_globals,
                device) -> tuple[list[dict], list[str], list[str]]:
    """(the files verified, the error lines, the lines of the files carried)."""
    files, errors, carried = [], [], []
    for found in files_found:
        path = found.path
        try:
            f = _verify_file(path, cfg, steps, seed, allow_globals, device, found)
        except runfolder.NotAState as e:  # carried: nothing to verify, nothing wrong
            carried.append(f"{path}: {runfolder.NOT_A_STATE} ({e})")
            continue
        except (UpgdMigrateError, KeyError, TypeError, ValueError) as e:
            errors.append(P.message(path, e))
            continue
        f["reports"], f["skipped"] = _split(f["reports"])
        files.append(f)
    return files, errors, carried


def run_verify(paths: Sequence[Path], config: Optional[Path], steps: int, seed: int, fmt: str,
               allow_globals: Sequence[str], plot: Optional[Path] = None,
               device: str = "cpu") -> int:
    from upgd_migrate.verify import plot as plotting
    from upgd_migrate.verify.config import read_config

    if why := _device_problem(device):
        click.echo(why, err=True)
        return 2
    if plot is not None and (why := plotting.problem(plot)):
        raise UpgdMigrateError(why)  # before the runs: they take a while
    cfg = read_config(config) if config else None
    found, warnings = runfolder.discover_checked(paths)
    files, errors, carried = _verify_all(found, cfg, steps, seed, allow_globals, device)
    plot_error = None
    if plot is not None:
        try:
            plotting.write(files, plot)
        except OSError as e:  # the inputs were read: only the plot is missing
            plot_error = f"{plot}: cannot write the plot: {e.strerror or e}"
    reports = [r for f in files for r in f["reports"]]
    skipped = sum(len(f["skipped"]) for f in files)
    failed = sum(not r.ok for r in reports)
    # Nothing verified is not a pass: an Adam checkpoint, or a folder of model weights.
    code = 2 if errors or plot_error or not reports else (1 if failed else 0)
    if fmt == "json":
        body = {"files": [{"path": f["path"], "container": f["container"],
                           "states": [render.report_json(r) for r in f["reports"]],
                           "skipped": f["skipped"]} for f in files],
                "errors": errors,
                "summary": {"states": len(reports), "failed": failed, "skipped": skipped}}
        if plot is not None:
            body["plot"] = {"path": str(plot), "error": plot_error}
        click.echo(json.dumps(envelope("verify", body, code, warnings), indent=2))
        return code
    for line in warnings:
        click.echo(line, err=True)
    for f in files:
        if f["reports"] or not f["skipped"]:
            for line in render.verify_text(f["path"], f["reports"]):
                click.echo(line)
        for where in f["skipped"]:
            click.echo(f"{f['path']}: {where}: not a UPGD/VGS state: skipped")
    for line in carried:
        click.echo(line)
    for e in errors + [plot_error] * bool(plot_error):
        click.echo(e, err=True)
    line = _summary(len(reports), len(files), failed, skipped, len(errors))
    click.echo(line + ("; plot not written" if plot_error else ""), err=True)
    return code


def _device_problem(device: str) -> Optional[str]:
    """Why ``--device`` cannot hold the proxies here, or None."""
    import torch

    try:
        kind = torch.device(device).type
    except RuntimeError:
        return f"verify: --device {device}: not a torch device (cpu, cuda, cuda:N)"
    if kind == "cuda" and not torch.cuda.is_available():
        return f"verify: --device {device}: torch {torch.__version__} sees no CUDA device"
    if kind not in ("cpu", "cuda"):
        return f"verify: --device {device}: only cpu and cuda are supported"
    return None


def _summary(states: int, files: int, failed: int, skipped: int, errors: int) -> str:
    line = f"{plural(states, 'state')} verified in {plural(files, 'file')}: {failed} failed"
    if skipped:
        line += f", {skipped} skipped (not UPGD/VGS)"
    if errors:
        line += f", {plural(errors, 'file')} unreadable"
    if not states:
        line += "; nothing verified"
    return line
