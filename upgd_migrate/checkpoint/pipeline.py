"""One file through the pipeline: open -> migrate every state -> check | dry-run | write.

A bad file is a value (``FileResult`` with an error), never an exception that stops a run over
a directory. Writing is atomic; a file whose states are all current is never rewritten.
"""
from __future__ import annotations

import dataclasses
import enum
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

from upgd_migrate.checkpoint.containers import (DCP_METADATA, Checkpoint, is_dcp_folder,
                                                open_checkpoint, write_checkpoint)
from upgd_migrate.checkpoint.detect import optimizer_class
from upgd_migrate.checkpoint.migrate import Context, Result, migrate_optimizer, migrate_vgs
from upgd_migrate.errors import UpgdMigrateError

EXTENSIONS = (".pt", ".pth", ".ckpt", ".zip")
PROGRESS_BYTES = 100 * 1024 * 1024
Progress = Callable[[str], None]


class WriteBack(enum.Enum):
    CHECK = "check"  # say whether anything would change
    DRY_RUN = "dry-run"  # say what would change, in detail
    WRITE = "write"  # write to -o OUT or in place


@dataclass
class StateResult:
    where: str
    result: Result


@dataclass
class FileResult:
    path: Path
    status: str  # migrated | would migrate | already current | no states | error
    container: str | None = None
    states: list[StateResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    output: Path | None = None
    error: str | None = None
    checkpoint: Checkpoint | None = None

    @property
    def changed(self) -> bool:
        return any(s.result.changed for s in self.states)


def several(paths: Sequence[Path]) -> bool:
    """Several inputs (so ``-o`` names a folder): more than one, or a folder of checkpoints."""
    return len(paths) > 1 or any(Path(p).is_dir() and not is_dcp_folder(p) for p in paths)


def _walk(folder: Path) -> list[Path]:
    """Checkpoint files and DCP folders under ``folder``; a DCP folder is one checkpoint."""
    found = []
    for here, dirs, files in os.walk(folder):
        base = Path(here)
        for d in list(dirs):
            if is_dcp_folder(base / d):
                found.append(base / d)
                dirs.remove(d)
        found += [base / f for f in files if Path(f).suffix in EXTENSIONS
                  and not f.startswith(".") and (base / f).is_file()]
    return sorted(found)


def discover(paths: Sequence[Path]) -> list[tuple[Path, Path]]:
    """(checkpoint, path relative to the argument it came from), folders searched recursively."""
    found: list[tuple[Path, Path]] = []
    for arg in paths:
        arg = Path(arg)
        if arg.is_dir() and not is_dcp_folder(arg):
            found += [(p, p.relative_to(arg)) for p in _walk(arg)]
        else:
            found.append((arg, Path(arg.name)))
    return found


def param_numels(ckpt: Checkpoint) -> list[int] | None:
    """Tensor sizes of the container's first UPGD optimizer, in its parameter order."""
    for slot in ckpt.slots:
        if slot.kind == "optimizer" and optimizer_class(slot.state):
            ids = [i for g in slot.state["param_groups"] for i in g["params"]]
            entries = [slot.state["state"].get(i) for i in ids]
            if all(e and "avg_utility" in e for e in entries):
                # dict.__getitem__: a DCP entry's tensor handle knows its size unread
                return [dict.__getitem__(e, "avg_utility").numel() for e in entries]
    return None


def migrate_checkpoint(ckpt: Checkpoint, ctx: Context) -> list[StateResult]:
    ctx = dataclasses.replace(ctx, param_numels=param_numels(ckpt))
    out = []
    for slot in ckpt.slots:
        run = migrate_optimizer if slot.kind == "optimizer" else migrate_vgs
        out.append(StateResult(slot.where, run(slot.state, ctx)))
    return out


def backup(path: Path, suffix: str) -> Path:
    """Keep the original beside itself; an existing backup is never overwritten.

    For a DCP folder that is its ``.metadata``: an in-place migration leaves every data file
    as it was, so the old ``.metadata`` is the whole old checkpoint.
    """
    if is_dcp_folder(path):
        path = path / DCP_METADATA
    target = path.with_name(path.name + suffix)
    exists = UpgdMigrateError(f"{path}: backup {target} already exists: not overwritten, file "
                              "left unchanged (remove it or pick another --backup suffix)")
    if target.exists():
        raise exists
    try:
        os.link(path, target)  # the original's inode survives os.replace: no copy needed
    except FileExistsError:
        raise exists from None
    except OSError:  # no hard links here: copy, refusing to clobber a file that appeared since
        with open(path, "rb") as src, open(target, "xb") as dst:
            shutil.copyfileobj(src, dst)
        shutil.copystat(path, target)
    return target


@dataclass
class Options:
    mode: WriteBack
    ctx: Context = Context()
    output: Optional[Path] = None  # a file, or a folder for many inputs
    in_place: bool = False
    backup_suffix: Optional[str] = None
    allow_globals: Sequence[str] = ()


def _target(path: Path, rel: Path, opts: Options, many: bool) -> Path:
    if opts.in_place or opts.output is None:
        return path
    if many or opts.output.is_dir():
        target = opts.output / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        return target
    return opts.output


def process(path: Path, rel: Path, opts: Options, many: bool = False,
            progress: Optional[Progress] = None) -> FileResult:
    tick = progress or (lambda stage: None)
    try:
        tick("load")
        ckpt = open_checkpoint(path, opts.allow_globals)
        tick("migrate")
        states = migrate_checkpoint(ckpt, opts.ctx)
    except (UpgdMigrateError, KeyError, TypeError, ValueError) as e:
        return FileResult(path, "error", error=message(path, e))
    res = FileResult(path, "", ckpt.container, states, checkpoint=ckpt)
    if not ckpt.slots:
        res.status = "no states"
    elif not res.changed:
        res.status = "already current"
    elif opts.mode is not WriteBack.WRITE:
        res.status = "would migrate"
    else:
        return _write(res, rel, opts, many, tick)
    return res


def _write(res: FileResult, rel: Path, opts: Options, many: bool, tick: Progress) -> FileResult:
    target = _target(res.path, rel, opts, many)
    try:
        if opts.in_place and opts.backup_suffix:
            res.notes.append(f"backup: {backup(res.path, opts.backup_suffix)}")
        tick("write")
        write_checkpoint(res.checkpoint, [s.result.state for s in res.states], target)
    except (UpgdMigrateError, OSError) as e:
        return FileResult(res.path, "error", res.container, res.states,
                          error=message(res.path, e))
    res.notes.extend(res.checkpoint.notes)
    res.status, res.output = "migrated", target
    return res


def message(path: Path, e: Exception) -> str:
    """One line naming the file, for errors that end one file's processing."""
    text = str(e)
    if isinstance(e, KeyError):
        text = f"missing key {e}"
    return text if text.startswith(str(path)) else f"{path}: {text}"


def process_all(files: Iterable[tuple[Path, Path]], opts: Options, many: bool = False,
                progress_for: Callable[[Path], Optional[Progress]] = lambda p: None,
                ) -> list[FileResult]:
    """``many``: the inputs were several files or a folder, so ``-o`` names a folder."""
    files = list(files)
    many = many or len(files) > 1
    return [process(p, rel, opts, many, progress_for(p)) for p, rel in files]
