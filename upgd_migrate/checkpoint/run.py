"""``run_*`` functions behind the ``checkpoint`` command: options in, exit code out."""
from __future__ import annotations

import dataclasses
import functools
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

import click

from upgd_migrate.checkpoint import inspect as insp
from upgd_migrate.checkpoint import runfolder
from upgd_migrate.checkpoint import pipeline as P
from upgd_migrate.checkpoint import render
from upgd_migrate.checkpoint.steps import Context
from upgd_migrate import fileio, sparsefile
from upgd_migrate.errors import resume_interrupts
from upgd_migrate.report import envelope


def _err(line: str) -> None:
    click.echo(line, err=True)


def _run_one(found: runfolder.Found, opts: P.Options, many: bool, tick) -> P.FileResult:
    return P.process(found.path, found.rel, opts, many, tick, found)


def _with_progress(path: Path, run) -> P.FileResult:
    size = path.stat().st_size if path.is_file() else 0
    if size <= P.PROGRESS_BYTES:
        return run(None)
    # Big files take seconds to minutes: show the stage on stderr. A stage moves the bar
    # when it ends, so the write (and its fsync) is inside the bar, not after 100%.
    with click.progressbar(length=3, label=str(path), file=sys.stderr,
                           item_show_func=lambda s: s) as bar:
        started: list[str] = []

        def tick(stage: str) -> None:
            bar.update(1 if started else 0, stage)
            started.append(stage)

        try:
            result = run(tick)
        except BaseException:  # an interrupt: its line must not follow the bar's
            click.echo("", err=True)
            raise
        bar.update(bar.length - bar.pos, "done")
    return result


def migrate_file(found: runfolder.Found, opts: P.Options, many: bool, run_verify: bool,
                 progress: bool = False) -> dict:
    """One file migrated (and verified): ``{"result": FileResult, "verify": [...], "lines"}``,
    picklable (a worker's result: the checkpoint and its tensors are dropped)."""
    resume_interrupts()  # a signal since the last file's write interrupts here, not there
    path = found.path
    run = functools.partial(_run_one, found, opts, many)
    r = _with_progress(path, run) if progress and not found.carried else run(None)
    verified, lines = [], []
    if run_verify:
        from upgd_migrate.verify.run import verify_migrated  # the optimizers: only when asked

        resume_interrupts()
        verified, lines = verify_migrated([r])
    r.checkpoint = None
    r.states = [P.StateResult(s.where, dataclasses.replace(s.result, state=None))
                for s in r.states]
    return {"result": r, "verify": verified, "lines": lines}


def _process(files, opts: P.Options, many: bool, run_verify: bool, jobs: int,
             stream: bool) -> list[dict]:
    from upgd_migrate.api.pool import default_jobs, imap

    serial = min(jobs or default_jobs(), len(files)) <= 1  # progress bars only when serial
    per_file = functools.partial(migrate_file, opts=opts, many=many, run_verify=run_verify,
                                 progress=serial and not stream)
    done = {}
    for i, out in imap(per_file, files, 1 if serial else jobs):
        done[i] = out
        if out["result"].status == "migrated":  # written whole: a stand-in was filled first,
            sparsefile.filled(out["result"].path)  # maybe by a worker this process forked
        if stream:
            click.echo(json.dumps(file_json(out, run_verify)))
    return [done[i] for i in sorted(done)]


def file_json(out: dict, run_verify: bool) -> dict:
    """``migrate_file``'s result as its entry of the JSON envelope (and of jsonl, the API)."""
    entry = render.file_entry(out["result"])
    if run_verify:
        entry["verify"] = out["verify"]
    return entry


def _one_thread() -> None:
    """The migration's arithmetic streams through memory once per tensor: a second intra-op
    thread gains little, and on a busy machine its barrier waits cost 5-20x on the small
    tensors a run folder is made of (measured: 100k elements, 2.6 ms vs 18-47 ms per pass)."""
    import torch

    torch.set_num_threads(1)


def _process_synced(files, opts: P.Options, many: bool,
                    *args) -> tuple[list[dict], str | None]:
    """-o OUT of a run: one sync of the written tree at the end, as cp -r && sync (a single
    file, and --in-place, fsync each file). The error line when that sync fails. ``args``:
    the rest of ``_process``'s."""
    if opts.output is None or opts.mode is not P.WriteBack.WRITE or not many:
        return _process(files, opts, many, *args), None
    results: list[dict] = []
    try:
        with fileio.one_sync(opts.output):
            results = _process(files, opts, many, *args)
    except OSError as e:  # the sync at the end: the files may not be on disk
        return results, f"{opts.output}: cannot make the output durable: {e.strerror or e}"
    return results, None


def _mode(check: bool, dry_run: bool) -> P.WriteBack:
    if check:
        return P.WriteBack.CHECK
    return P.WriteBack.DRY_RUN if dry_run else P.WriteBack.WRITE


def run_migrate(paths: Sequence[Path], output: Optional[Path], in_place: bool,
                backup: Optional[str], check: bool, dry_run: bool, ctx: Context,
                run_verify: bool, fmt: str, allow_globals: Sequence[str],
                link: bool = False, jobs: int = 1) -> int:
    _one_thread()
    mode = _mode(check, dry_run)
    opts = P.Options(mode, ctx, output, in_place, backup, tuple(allow_globals), link,
                     real_states=run_verify)
    many = runfolder.several(paths)
    files, warnings = runfolder.discover_checked(paths)
    if output is not None:
        runfolder.check_output(files, paths, output, many)
    outs, unsynced = _process_synced(files, opts, many, run_verify, jobs, fmt == "jsonl")
    results = [o["result"] for o in outs]
    code = render.migrate_exit_code(results) if unsynced is None else 2
    warnings += [unsynced] if unsynced else []
    verified = [v for o in outs for v in o["verify"]]
    if any(not s["ok"] for f in verified for s in f["states"]):
        code = max(code, 1)
    if fmt in ("json", "jsonl"):
        doc = render.migrate_doc(results, mode.value)
        if run_verify:
            doc["verify"] = verified
        if fmt == "jsonl":  # the files went out as they finished: the summary closes it
            del doc["files"]
            doc.pop("verify", None)
        click.echo(json.dumps(envelope("checkpoint", doc, code, warnings),
                              indent=None if fmt == "jsonl" else 2))
        return code
    for line in warnings:
        _err(line)
    for line in render.migrate_text(results, detail=mode is not P.WriteBack.CHECK):
        click.echo(line)
    for o in outs:
        for line in o["lines"]:
            click.echo(line)
    for r in results:
        if r.error:
            _err(r.error)
    _err(render.summary_line(results))
    return code


def run_inspect(paths: Sequence[Path], fmt: str, allow_globals: Sequence[str],
                jobs: int = 1) -> int:
    from upgd_migrate.api.pool import imap

    files, warnings = runfolder.discover_checked(paths)
    per_file = functools.partial(insp.inspect_path, allow_globals=tuple(allow_globals))
    done = {}
    for i, doc in imap(per_file, files, jobs):
        done[i] = doc
        if fmt == "jsonl":
            click.echo(json.dumps(doc))
    docs = [done[i] for i in sorted(done)]
    code = 2 if any("error" in d for d in docs) else 0
    ours = sum(st["class"] is not None for d in docs for st in d.get("states", ()))
    none_found = _none_found(paths) if not ours and not code else None
    code = 2 if none_found else code
    if fmt in ("json", "jsonl"):
        errors = sum("error" in d for d in docs)
        summary = {"files": len(docs), "errors": errors,
                   "carried": sum("carried" in d for d in docs),
                   "states": sum(len(d.get("states", ())) for d in docs), "upgd_vgs_states": ours}
        body = {"summary": summary} if fmt == "jsonl" else {"files": docs, "summary": summary}
        body.update({"error": none_found} if none_found else {})
        click.echo(json.dumps(envelope("checkpoint inspect", body, code, warnings),
                              indent=None if fmt == "jsonl" else 2))
        return code
    for line in warnings:
        _err(line)
    for doc in docs:
        if "error" in doc:
            _err(doc["error"])
        elif "carried" in doc:
            click.echo(f"{doc['path']}: {runfolder.NOT_A_STATE} ({doc['carried']})")
        else:
            for line in insp.inspect_text(doc):
                click.echo(line)
    if none_found:
        _err(none_found)
    return code


def _none_found(paths: Sequence[Path]) -> str:
    """As checkpoint and verify: a run that found no UPGD/VGS state at all is not a pass."""
    return f"{', '.join(str(p) for p in paths)}: no UPGD/VGS state found: nothing to migrate " \
           "or verify"
