"""``run_*`` functions behind the ``checkpoint`` and ``verify`` commands: options in, exit code out."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional, Sequence

import click

from upgd_migrate.checkpoint import inspect as insp
from upgd_migrate.checkpoint import pipeline as P
from upgd_migrate.checkpoint import render
from upgd_migrate.checkpoint.migrate import Context
from upgd_migrate.errors import UpgdMigrateError


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _err(line: str) -> None:
    click.echo(line, err=True)


def _process(files, opts: P.Options, many: bool) -> list[P.FileResult]:
    results = []
    for path, rel in files:
        size = path.stat().st_size if path.is_file() else 0
        if size <= P.PROGRESS_BYTES:
            results.append(P.process(path, rel, opts, many))
            continue
        # Big files take seconds to minutes: show the stage on stderr.
        with click.progressbar(length=3, label=str(path), file=sys.stderr,
                               item_show_func=lambda s: s) as bar:
            results.append(P.process(path, rel, opts, many,
                                     lambda stage: bar.update(1, stage)))
    return results


def _mode(check: bool, dry_run: bool) -> P.WriteBack:
    if check:
        return P.WriteBack.CHECK
    return P.WriteBack.DRY_RUN if dry_run else P.WriteBack.WRITE


def run_migrate(paths: Sequence[Path], output: Optional[Path], in_place: bool,
                backup: Optional[str], check: bool, dry_run: bool, ctx: Context,
                run_verify: bool, fmt: str, allow_globals: Sequence[str]) -> int:
    mode = _mode(check, dry_run)
    opts = P.Options(mode, ctx, output, in_place, backup, tuple(allow_globals))
    many = len(paths) > 1 or any(Path(p).is_dir() for p in paths)
    results = _process(P.discover(paths), opts, many)
    code = render.migrate_exit_code(results)
    verified, verify_lines = _verify_results(results) if run_verify else ([], [])
    if any(not s["ok"] for f in verified for s in f["states"]):
        code = max(code, 1)
    if fmt == "json":
        doc = json.loads(render.migrate_json(results, mode.value))
        if run_verify:
            doc["verify"] = verified
        doc["exit_code"] = code
        click.echo(json.dumps(doc, indent=2))
    else:
        for line in render.migrate_text(results, detail=mode is not P.WriteBack.CHECK):
            click.echo(line)
        for line in verify_lines:
            click.echo(line)
        for r in results:
            if r.error:
                _err(r.error)
        _err(render.summary_line(results))
    return code


def _verify_results(results: list[P.FileResult]) -> tuple[list[dict], list[str]]:
    """Verify what was migrated (or would be): the states in memory, not the files."""
    from upgd_migrate.checkpoint.verify import verify_states

    out, lines = [], []
    for r in results:
        if r.checkpoint is None:
            continue
        slots = [(s.where, slot.kind, s.result.state)
                 for s, slot in zip(r.states, r.checkpoint.slots)]
        reports = verify_states(slots)
        lines += render.verify_text(str(r.output or r.path), reports)
        out.append({"path": str(r.output or r.path),
                    "states": [render.report_json(x) for x in reports]})
    return out, lines


def run_inspect(paths: Sequence[Path], fmt: str, allow_globals: Sequence[str]) -> int:
    docs, code = [], 0
    for path, _ in P.discover(paths):
        try:
            docs.append(insp.inspect_file(path, allow_globals))
        except (UpgdMigrateError, KeyError, TypeError, ValueError) as e:
            docs.append({"path": str(path), "error": P.message(path, e)})
            code = 2
    if fmt == "json":
        click.echo(json.dumps(docs, indent=2))
        return code
    for doc in docs:
        if "error" in doc:
            _err(doc["error"])
        else:
            for line in insp.inspect_text(doc):
                click.echo(line)
    return code


def _config_check(reports, slots, kwargs: dict) -> None:
    from upgd_migrate.checkpoint.config import mismatches
    from upgd_migrate.checkpoint.verify import Check

    for report, (_, kind, state) in zip(reports, slots):
        if kind != "optimizer" or report.cls in (None, "-"):
            continue
        diff = mismatches(kwargs, state)
        report.checks.append(Check("config", not diff, "; ".join(diff) + " (the checkpoint's "
                                   "values win on resume)" if diff else "config agrees"))


def _verify_file(path: Path, cfg, steps: int, seed: int, allow_globals) -> dict:
    from upgd_migrate.checkpoint.containers import open_checkpoint
    from upgd_migrate.checkpoint.verify import verify_states

    ckpt = open_checkpoint(path, allow_globals)
    slots = [(s.where, s.kind, s.state) for s in ckpt.slots]
    kwargs, vgs_cfg = cfg if cfg else ({}, None)
    reports = verify_states(slots, steps, seed, vgs_cfg)
    if cfg:
        _config_check(reports, slots, kwargs)
    return {"path": str(path), "container": ckpt.container, "reports": reports}


def run_verify(paths: Sequence[Path], config: Optional[Path], steps: int, seed: int, fmt: str,
               allow_globals: Sequence[str]) -> int:
    from upgd_migrate.checkpoint.config import read_config

    cfg = read_config(config) if config else None
    files, errors = [], []
    for path, _ in P.discover(paths):
        try:
            files.append(_verify_file(path, cfg, steps, seed, allow_globals))
        except (UpgdMigrateError, KeyError, TypeError, ValueError) as e:
            errors.append(P.message(path, e))
    reports = [r for f in files for r in f["reports"]]
    failed = sum(not r.ok for r in reports)
    code = 2 if errors else (1 if failed else 0)
    if fmt == "json":
        doc = {"files": [{"path": f["path"], "container": f["container"],
                          "states": [render.report_json(r) for r in f["reports"]]}
                         for f in files],
               "errors": errors, "summary": {"states": len(reports), "failed": failed},
               "exit_code": code}
        click.echo(json.dumps(doc, indent=2))
        return code
    for f in files:
        for line in render.verify_text(f["path"], f["reports"]):
            click.echo(line)
    for e in errors:
        _err(e)
    _err(f"{_n(len(reports), 'state')} verified in {_n(len(files), 'file')}: {failed} failed"
         + (f", {_n(len(errors), 'file')} unreadable" if errors else ""))
    return code
