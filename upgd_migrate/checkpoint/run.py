"""``run_*`` functions behind the ``checkpoint`` command: options in, exit code out."""
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
    many = P.several(paths)
    results = _process(P.discover(paths), opts, many)
    code = render.migrate_exit_code(results)
    verified, verify_lines = [], []
    if run_verify:
        from upgd_migrate.verify.run import verify_migrated  # the optimizers: only when asked

        verified, verify_lines = verify_migrated(results)
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
