"""``run_verify`` behind the ``verify`` command, and the ``checkpoint --verify`` pass."""
from __future__ import annotations

import functools
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
from upgd_migrate.verify.drive import DEFAULT_STEPS, Check, verify_states
from upgd_migrate.verify.sample import DEFAULT_SAMPLE


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


def _verify_file(path: Path, cfg, steps: int, seed: int, allow_globals, sample: int,
                 found: Optional[runfolder.Found] = None, device: str = "cpu") -> dict:
    found = found or runfolder.Found(Path(path), Path(Path(path).name), "torch", False)
    ckpt = runfolder.open_found(found, allow_globals)
    slots = [(s.where, s.kind, loaded(ckpt, s.state)) for s in ckpt.slots]
    kwargs, vgs_cfg = cfg if cfg else ({}, None)
    reports = verify_states(slots, steps, seed, vgs_cfg, sample=sample, device=device)
    if cfg:
        _config_check(reports, slots, kwargs)
    return {"path": str(path), "container": ckpt.container, "reports": reports}


def _split(reports) -> tuple[list, list[str]]:
    """(the reports of UPGD-family and VGS states, where the other optimizers were)."""
    skipped = [r.where for r in reports if r.kind == "optimizer" and r.cls in (None, "-")]
    return [r for r in reports if r.where not in skipped], skipped


def verify_file(path, cfg=None, steps: int = DEFAULT_STEPS, seed: int = 0,
                allow_globals: Sequence[str] = (), sample: int = DEFAULT_SAMPLE,
                device: str = "cpu") -> dict:
    """One file's reports (picklable: a worker's result), ``{"path", "error"}``, or
    ``{"path", "carried"}`` for a walked file that holds no state. ``path``: a path, or what
    a walk found (a ``runfolder.Found``)."""
    found = path if isinstance(path, runfolder.Found) else None
    path = found.path if found else path
    try:
        f = _verify_file(path, cfg, steps, seed, allow_globals, sample, found, device)
    except runfolder.NotAState as e:  # carried: nothing to verify, nothing wrong
        return {"path": str(path), "carried": str(e)}
    except (UpgdMigrateError, KeyError, TypeError, ValueError) as e:
        return {"path": str(path), "error": P.message(path, e)}
    f["reports"], f["skipped"] = _split(f["reports"])
    return f


def file_json(f: dict) -> dict:
    """A file's entry of the JSON envelope (and of ``--format jsonl``, and of the API)."""
    if "error" in f or "carried" in f:
        return dict(f)
    return {"path": f["path"], "container": f["container"],
            "states": [render.report_json(r) for r in f["reports"]], "skipped": f["skipped"]}


def _verify_all(found, per_file, jobs: int,
                stream: bool) -> tuple[list[dict], list[str], list[str]]:
    """Every file through ``per_file`` (a pool with ``jobs``); with ``stream``, a JSON line per
    file as it finishes. In input order: (the files verified, the error lines, the lines of
    the files carried); a file that fails is an error, not a stop."""
    from upgd_migrate.api.pool import imap

    done: dict[int, dict] = {}
    for i, f in imap(per_file, list(found), jobs):
        done[i] = f
        if stream and "carried" not in f:
            click.echo(json.dumps(file_json(f)))
    ordered = [done[i] for i in sorted(done)]
    carried = [f"{f['path']}: {runfolder.NOT_A_STATE} ({f['carried']})" for f in ordered
               if "carried" in f]
    ordered = [f for f in ordered if "carried" not in f]
    return ([f for f in ordered if "error" not in f], [f["error"] for f in ordered
                                                        if "error" in f], carried)


def run_verify(paths: Sequence[Path], config: Optional[Path], steps: int, seed: int, fmt: str,
               allow_globals: Sequence[str], plot: Optional[Path] = None,
               sample: int = DEFAULT_SAMPLE, jobs: int = 1, device: str = "cpu") -> int:
    from upgd_migrate.verify import plot as plotting
    from upgd_migrate.verify.config import read_config

    if why := _device_problem(device):
        click.echo(why, err=True)
        return 2
    if plot is not None and (why := plotting.problem(plot)):
        raise UpgdMigrateError(why)  # before the runs: they take a while
    cfg = read_config(config) if config else None
    found, warnings = runfolder.discover_checked(paths)
    per_file = functools.partial(verify_file, cfg=cfg, steps=steps, seed=seed,
                                 allow_globals=tuple(allow_globals), sample=sample,
                                 device=device)
    files, errors, carried = _verify_all(found, per_file, jobs, fmt == "jsonl")
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
    summary = {"states": len(reports), "failed": failed, "skipped": skipped}
    if fmt == "json":
        body = {"files": [file_json(f) for f in files], "errors": errors, "summary": summary}
        if plot is not None:
            body["plot"] = {"path": str(plot), "error": plot_error}
        click.echo(json.dumps(envelope("verify", body, code, warnings), indent=2))
        return code
    if fmt == "jsonl":  # the files went out as they finished: the summary closes the stream
        body = {"errors": errors, "summary": summary}
        click.echo(json.dumps(envelope("verify", body, code, warnings)))
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
