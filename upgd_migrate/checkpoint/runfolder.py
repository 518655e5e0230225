"""A run folder: every file in it decided by content, and its mirror under ``-o OUT``.

Walking a folder looks at every file, never at its name: torch files (zip or legacy pickle),
stable-baselines3 zips and DCP folders (at any depth, one checkpoint each) can hold a state;
everything else the libraries write beside them (safetensors weights, JSON, plain pickles, event
files) is carried. A torch file whose pickle names no key of a state is carried unloaded, and so
is one that loads and holds none (:func:`open_found`); one that could hold a state but is refused
for its globals is "not checked" and says which ``--allow-global`` names would admit it.

``-o OUT`` mirrors the run: every file at its relative path, copied (a reflink or a copy inside
the kernel) or, with ``--link``, hard-linked: a trainer that rewrites a linked file in OUT in
place (``torch.save`` truncates) would rewrite the input too, so links are never the default.
Nothing is ever written over an input unless ``--in-place`` says so.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence, TypeVar

from upgd_migrate.checkpoint import io
from upgd_migrate.checkpoint.copyahead import CopyAhead
from upgd_migrate.checkpoint.formats import (CARRIED, STATE_FORMATS, open_checkpoint, sniff,
                                             torchfile)
from upgd_migrate.checkpoint.formats.base import Checkpoint, is_dcp_folder
from upgd_migrate.checkpoint.formats.sb3zip import sidecar_path
from upgd_migrate.errors import UpgdMigrateError, deferred_signals, note_commit
from upgd_migrate.fileio import clone_file, clone_into

T = TypeVar("T")
NOT_A_STATE = "not an optimizer state: carried"
NO_STATE_KEY = "torch file naming no optimizer or VGS key, not loaded"
NONE_FOUND = "no checkpoints found (no torch file, stable-baselines3 zip or DCP folder)"


@dataclass(frozen=True)
class Found:
    """One thing an argument named or a walk met: a file, or a DCP folder."""

    path: Path
    rel: Path  # below the argument it came from (the argument's own name when named)
    fmt: str  # what sniff() said, or "backup"
    walked: bool  # met in a folder (the lenient rule) rather than named

    @property
    def carried(self) -> bool:
        return self.fmt not in STATE_FORMATS

    @property
    def what(self) -> str:
        return "a backup beside its checkpoint" if self.fmt == "backup" else CARRIED.get(
            self.fmt, self.fmt)


class NotAState(Exception):
    """A walked file that cannot hold a UPGD/VGS state: carried, neither error nor success."""


class NotChecked(UpgdMigrateError):
    """A walked file that could hold a state but cannot be read safely (refused globals)."""


def several(paths: Sequence[Path]) -> bool:
    """Several inputs (so ``-o`` names a folder): more than one, or a run folder."""
    return len(paths) > 1 or any(Path(p).is_dir() and not is_dcp_folder(p) for p in paths)


def _walk(folder: Path) -> list[Found]:
    found: list[Found] = []
    for here, dirs, files in os.walk(folder):
        base = Path(here)
        dirs.sort()
        for d in list(dirs):
            if is_dcp_folder(base / d):  # one checkpoint: its files are not walked
                found.append(Found(base / d, (base / d).relative_to(folder), "dcp", True))
                dirs.remove(d)
        here_found = []
        for name in sorted(files):
            path = base / name
            if path.is_symlink() or not path.is_file():
                continue
            # our temp files and hidden files are never checkpoints, only carried
            fmt = "file" if name.startswith(".") else sniff(path)
            here_found.append(Found(path, path.relative_to(folder), fmt, True))
        found += _companions(here_found)
    return sorted(found, key=lambda f: f.rel)


def _companions(found: list[Found]) -> list[Found]:
    """An sb3 zip's sidecar goes with its zip (not listed); ``X<suffix>`` beside a checkpoint X
    is X's backup (``--backup``): carried, never migrated a second time."""
    states = {f.path.name: f for f in found if not f.carried}
    out = []
    for f in found:
        owner = next((s for n, s in states.items()
                      if f.path.name != n and f.path.name.startswith(n)), None)
        if owner is not None and f.path == sidecar_path(owner.path) and owner.fmt == "sb3":
            continue  # written (or copied) with its zip, never on its own
        if owner is not None and f.path.name.startswith(owner.path.name + "."):
            f = Found(f.path, f.rel, "backup", True)
        out.append(f)
    return out


def find(paths: Sequence[Path]) -> list[Found]:
    """Every file of every argument; a named argument is always a candidate (strict)."""
    found: list[Found] = []
    for arg in paths:
        arg = Path(arg)
        if arg.is_dir() and not is_dcp_folder(arg):
            found += _walk(arg)
        else:
            found.append(Found(arg, Path(arg.name), "dcp" if arg.is_dir() else "torch", False))
    return found


def discover(paths: Sequence[Path]) -> list[tuple[Path, Path]]:
    """(checkpoint, path relative to its argument): what could hold a state."""
    return [(f.path, f.rel) for f in find(paths) if not f.carried]


def discover_checked(paths: Sequence[Path]) -> tuple[list[Found], list[str]]:
    """``find``, plus a warning per folder that holds no checkpoint; nothing at all found is
    an error (exit 2): a run over an empty or mistyped folder must not look like a pass."""
    per_arg = [find([p]) for p in paths]
    found = [f for fs in per_arg for f in fs]
    if not any(not f.carried for f in found):
        where = ", ".join(str(p) for p in paths)
        raise UpgdMigrateError(f"{where}: {NONE_FOUND}")
    empty = [p for p, fs in zip(paths, per_arg)
             if Path(p).is_dir() and all(f.carried for f in fs)]
    return found, [f"warning: {p}: {NONE_FOUND}" for p in empty]


def open_found(f: Found, allow_globals: Sequence[str] = ()) -> Checkpoint:
    """Open what the walk or the user found, by the one rule of every command.

    Named: strict (any refusal is the error it is). Walked: a torch file whose pickle (read as
    opcodes, never run) names no key of a state raises :class:`NotAState` unloaded; one that
    does is loaded, and raises :class:`NotChecked` with the refusal's complete hint when its
    globals are refused, :class:`NotAState` when it holds no state after all.
    """
    if f.carried:
        raise NotAState(f.what)
    if f.walked and f.fmt == "torch" and not torchfile.state_keys_named(_pickle_of(f.path)):
        raise NotAState(NO_STATE_KEY)  # never loaded: no tensor read, no global needed
    try:
        ckpt = open_checkpoint(f.path, allow_globals)
    except io.UnsafeCheckpointError as e:
        if not f.walked:
            raise
        raise NotChecked(str(e)) from None
    if f.walked and not ckpt.slots:
        raise NotAState(ckpt.container)
    return ckpt


def by_range(attempt: Callable[[], T], accept: Callable[[T], bool] = lambda out: True,
             modes: tuple[str, ...] = ("meta", "states")) -> Optional[T]:
    """``attempt()`` on a torch zip in a bucket (a sparse stand-in), under each of ``modes``
    of :func:`upgd_migrate.checkpoint.io.sparse_reads` in turn, as
    :func:`upgd_migrate.checkpoint.zipslice.decide` says; None: load it whole. A refusal
    decided by the pickle alone (unsafe globals, no state) propagates."""
    from upgd_migrate.checkpoint import zipslice

    def under(mode: str) -> T:
        with io.sparse_reads(mode):
            return attempt()

    return zipslice.decide(under, accept, (io.UnsafeCheckpointError, NotAState, NotChecked),
                           modes)


def _pickle_of(path: Path) -> bytes:
    """A torch file's pickle (a zip's ``data.pkl``; a legacy file's head): no tensor data."""
    try:
        with zipfile.ZipFile(path) as zf:
            name = next(n for n in zf.namelist() if n.endswith("data.pkl"))
            return zf.read(name)
    except (zipfile.BadZipFile, StopIteration):  # legacy: the pickles, then the storages
        with open(path, "rb") as fh:
            return fh.read(64 << 20)
    except OSError:
        return b""


def target_path(path: Path, rel: Path, output: Optional[Path], many: bool) -> Path:
    """The file ``path`` (``rel`` below its argument) is written to; ``path`` without -o."""
    if output is None:
        return path
    if many or output.is_dir():
        return output / rel
    return output


def check_output(found: Sequence[Found], paths: Sequence[Path], output: Path,
                 many: bool) -> None:
    """Refuse, before anything is written: ``-o`` onto an input (that is --in-place), OUT
    inside an input folder (a rerun would walk into its own output), and two inputs that
    would land on the same output path (the second would overwrite the first)."""
    out = output.resolve()
    for arg in paths:
        top = Path(arg).resolve()
        if Path(arg).is_dir() and out != top and top in out.parents:
            raise UpgdMigrateError(f"-o {output}: inside the input folder {arg}: a rerun would "
                                   "walk into its own output; pick a folder outside it")
    seen: dict[Path, Path] = {}
    for f in found:
        target = target_path(f.path, f.rel, output, many).resolve()
        if target == f.path.resolve():
            raise UpgdMigrateError(f"-o {output}: would write {f.path} over itself; "
                                   "pass --in-place to rewrite inputs")
        if target in seen:
            raise UpgdMigrateError(
                f"-o {output}: {seen[target]} and {f.path} would both be written to "
                f"{target_path(f.path, f.rel, output, many)}; nothing written (give their "
                "common folder, which is mirrored below OUT as it is, or one at a time)")
        seen[target] = f.path


def make_parent(path: Path) -> None:
    """``path``'s folder, made where missing; a stat where it exists (``mkdir`` of an existing
    folder locks it, and a run's files mostly land in folders made already)."""
    if not path.parent.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)


def copy_counterpart(src: Path, dst: Path, link: bool = False,
                     ahead: Optional[CopyAhead] = None) -> str:
    """Make ``dst`` a copy of ``src`` (a hard link with ``link``), atomically replacing what
    is there (a hard link to ``src`` an older version made included: the input keeps its
    bytes). Returns "copied" or "linked". ``ahead``: a DCP folder's data files, being copied
    toward ``dst`` already.

    The copy is built under a temp name beside ``dst`` and renamed, so an interrupt leaves the
    old ``dst`` or the new one, and no temp file.
    """
    make_parent(dst)
    if src.is_dir():
        return _copy_folder(src, dst, link, ahead)
    with deferred_signals():  # the temp name exists only inside the try below
        fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    try:
        if link:
            os.close(fd)
            os.unlink(tmp)
            os.link(src, tmp)
        else:
            with os.fdopen(fd, "wb") as d:  # the file mkstemp made: one create, not two
                clone_into(src, d)
        note_commit()
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return "linked" if link else "copied"


def _copy_folder(src: Path, dst: Path, link: bool = False,
                 ahead: Optional[CopyAhead] = None) -> str:
    """A DCP folder's counterpart: a copy, never hard links (a later ``dcp.save`` into it
    truncates its files in place, as ``torch.save`` does a file's). Built beside
    ``dst`` under a temp name and renamed, so an interrupt leaves no half folder."""
    if dst.exists():
        raise UpgdMigrateError(f"{dst}: already exists: not overwritten")
    if ahead is not None:
        tmp = ahead.take()
    else:
        with deferred_signals():
            tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent))
    done = {src / name for name in (ahead.copied if ahead is not None else ())}

    def copy(a: str, b: str) -> None:
        if Path(a) not in done:  # not copied ahead
            if link:
                os.link(a, b)
            else:
                clone_file(Path(a), Path(b))

    try:
        shutil.copytree(src, tmp, dirs_exist_ok=True, copy_function=copy)
        note_commit()
        os.replace(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return "linked" if link else "copied"
