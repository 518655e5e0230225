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

from upgd_migrate.checkpoint import runfolder
from upgd_migrate.checkpoint.copyahead import CopyAhead
from upgd_migrate.checkpoint.formats import open_checkpoint, sb3zip, write_checkpoint
from upgd_migrate.checkpoint.formats.base import DCP_METADATA, Checkpoint, is_dcp_folder
from upgd_migrate.checkpoint.detect import optimizer_class
from upgd_migrate.checkpoint.steps import Context, Result, migrate_optimizer, migrate_vgs
from upgd_migrate.errors import UpgdMigrateError, deferred_signals, raise_if_interrupted
from upgd_migrate.sparsefile import fill, is_sparse

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
    status: str  # migrated | would migrate | already current | skipped | no states | error
    #              | sidecar repaired | would repair sidecar | carried | not checked
    container: str | None = None
    states: list[StateResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    output: Path | None = None
    error: str | None = None
    checkpoint: Checkpoint | None = None
    mirrored: str | None = None  # "copied" | "linked": the -o counterpart of an unchanged file

    @property
    def changed(self) -> bool:
        return (any(s.result.changed for s in self.states)
                or self.status in ("sidecar repaired", "would repair sidecar"))

    @property
    def relevant(self) -> bool:
        """Holds a UPGD-family optimizer or VGS state (not only torch.optim ones)."""
        return any(s.result.cls is not None for s in self.states)


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
    fill(path)  # a stand-in of a bucket's object: the backup holds its bytes, never a hole
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
    link: bool = False  # --link: -o counterparts of unchanged files are hard links
    # --verify: the states are run after; a torch zip in a bucket is decided on its real states
    real_states: bool = False


def process(path: Path, rel: Path, opts: Options, many: bool = False,
            progress: Optional[Progress] = None,
            found: Optional[runfolder.Found] = None) -> FileResult:
    """``found``: what the walk said ``path`` is (None: named by the user, the strict rule)."""
    found = found or runfolder.Found(path, rel, "torch", walked=False)
    ahead = _copy_ahead(found, opts, many)
    try:
        return _process(found, opts, many, progress or (lambda stage: None), ahead)
    finally:
        if ahead is not None:
            ahead.cancel()  # nothing once a writer took it


def _copy_ahead(found: runfolder.Found, opts: Options, many: bool) -> Optional[CopyAhead]:
    """-o of a DCP folder: its data files, copied while its state is read (see copyahead)."""
    if (opts.mode is not WriteBack.WRITE or opts.output is None or opts.link
            or not is_dcp_folder(found.path)):
        return None
    return CopyAhead.start(found.path, runfolder.target_path(found.path, found.rel,
                                                             opts.output, many))


def _process(found: runfolder.Found, opts: Options, many: bool, tick: Progress,
             ahead: Optional[CopyAhead]) -> FileResult:
    path, rel = found.path, found.rel
    try:
        tick("load")
        ckpt, states = _open_and_migrate(found, opts, tick)
    except runfolder.NotAState as e:  # carried: neither error nor success
        return _mirror_only(FileResult(path, "carried", str(e)), rel, opts, many, ahead)
    except runfolder.NotChecked as e:  # exit 2, but -o OUT still gets the file as it is
        return _mirror_only(FileResult(path, "not checked", error=message(path, e)), rel,
                            opts, many, ahead)
    except (UpgdMigrateError, KeyError, TypeError, ValueError) as e:
        return FileResult(path, "error", error=message(path, e))
    res = FileResult(path, "", ckpt.container, states, checkpoint=ckpt)
    if not ckpt.slots:
        res.status = "no states"
    elif not res.relevant:
        res.status = "skipped"  # torch.optim.Adam and friends: not ours to migrate or verify
    elif res.changed and opts.mode is WriteBack.WRITE:
        return _write(res, rel, opts, many, tick, ahead)
    elif res.changed:
        res.status = "would migrate"
    else:
        res.status = "already current"
    if opts.mode is WriteBack.WRITE:
        return _keep(res, rel, opts, many, ahead)
    if _sidecar_fix(res) is not None:
        res.status = "would repair sidecar"
    return res


def _open_and_migrate(found: runfolder.Found, opts: Options,
                      tick: Progress) -> tuple[Checkpoint, list[StateResult]]:
    """A torch zip in a bucket (a sparse stand-in) is decided from its pickle, then from its
    states' tensors; it is fetched whole only to be written (see checkpoint.zipslice)."""
    def opened() -> tuple[Checkpoint, list[StateResult]]:
        ckpt = runfolder.open_found(found, opts.allow_globals)
        return ckpt, migrate_checkpoint(ckpt, opts.ctx)

    if is_sparse(found.path):
        # A run that finished read no tensor data it lacked (the meta device raises): what it
        # decided stands, unless it is to be written (that needs every byte).
        writes = opts.mode is WriteBack.WRITE
        got = runfolder.by_range(
            opened, lambda out: not writes or not any(s.result.changed for s in out[1]),
            ("states",) if opts.real_states else ("meta",) if writes else ("meta", "states"))
        if got is not None:
            return got
    ckpt = runfolder.open_found(found, opts.allow_globals)
    tick("migrate")
    return ckpt, migrate_checkpoint(ckpt, opts.ctx)


def _sidecar_fix(res: FileResult) -> dict | None:
    if res.container != sb3zip.CONTAINER or res.status != "already current":
        return None
    return sb3zip.stale_sidecar(res.path)


def _mirror_only(res: FileResult, rel: Path, opts: Options, many: bool,
                 ahead: Optional[CopyAhead] = None) -> FileResult:
    """A file that is not migrated: its -o counterpart, byte for byte (the run resumes from
    OUT as from the input)."""
    if opts.mode is not WriteBack.WRITE or opts.output is None:
        return res
    target = runfolder.target_path(res.path, rel, opts.output, many)
    try:
        res.mirrored = runfolder.copy_counterpart(res.path, target, opts.link, ahead)
        res.output = target
    except OSError as e:
        raise_if_interrupted()
        return FileResult(res.path, "error", res.container,
                          error=f"{res.path}: cannot write {target}: {e.strerror or e}")
    return res


def _keep(res: FileResult, rel: Path, opts: Options, many: bool,
          ahead: Optional[CopyAhead] = None) -> FileResult:
    """A file needing no migration: repair a stale sb3 sidecar, give -o OUT its counterpart."""
    fix = _sidecar_fix(res)
    target = runfolder.target_path(res.path, rel, opts.output, many)
    try:
        # A lone file of someone else's optimizer is an error run: nothing is written.
        if opts.output is not None and (many or res.relevant):
            res.mirrored = runfolder.copy_counterpart(res.path, target, opts.link, ahead)
            res.output = target
            if sb3zip.sidecar_path(res.path).is_file() and fix is None:
                runfolder.copy_counterpart(sb3zip.sidecar_path(res.path),
                                           sb3zip.sidecar_path(target), opts.link)
        if fix is not None:
            sb3zip.write_sidecar(target, fix)
            res.status = "sidecar repaired"
            res.notes.append(f"{sb3zip.sidecar_path(target).name}: sha256 and size repaired "
                             "(left stale by an interrupted run)")
    except OSError as e:
        raise_if_interrupted()
        return FileResult(res.path, "error", res.container, res.states,
                          error=f"{res.path}: cannot write {target}: {e.strerror or e}")
    return res


def _write(res: FileResult, rel: Path, opts: Options, many: bool, tick: Progress,
           ahead: Optional[CopyAhead] = None) -> FileResult:
    target = runfolder.target_path(res.path, rel, opts.output, many)
    kept: Path | None = None
    before = _identity(res.path)
    try:
        runfolder.make_parent(target)
        if opts.in_place and opts.backup_suffix:
            with deferred_signals():  # the backup exists and `kept` says so, or neither
                kept = backup(res.path, opts.backup_suffix)
            res.notes.append(f"backup: {kept}")
        tick("write")
        write_checkpoint(res.checkpoint, [s.result.state for s in res.states], target, ahead)
    except BaseException as e:
        # The original is still in place (not replaced): the backup made for it is clutter
        # that would make the rerun refuse ("backup already exists").
        if kept is not None and _identity(res.path) == before:
            kept.unlink(missing_ok=True)
        if not isinstance(e, (UpgdMigrateError, OSError)):
            raise
        raise_if_interrupted()
        text = (f"{res.path}: cannot write {target}: {e.strerror or e}"
                if isinstance(e, OSError) else message(res.path, e))
        return FileResult(res.path, "error", res.container, res.states, error=text)
    res.notes.extend(res.checkpoint.notes)
    res.status, res.output = "migrated", target
    return res


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def message(path: Path, e: Exception) -> str:
    """One line naming the file, for errors that end one file's processing."""
    raise_if_interrupted()  # a signal that C++ code turned into an ordinary error
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
