"""A run folder: walk it, and mirror it to ``-o OUT``.

Walking a folder finds every checkpoint in it (files, and DCP folders as one checkpoint).
``-o OUT`` puts each input where the run expects it, and gives inputs that need no change their
counterparts.

``-o OUTDIR`` over a folder must give a training run pointed at OUTDIR every checkpoint, not
only the migrated ones: an input that needs no change gets a copy there (a reflink where the
file system has them: no space, no time). Never a hard link: ``torch.save`` into OUTDIR
truncates and rewrites the file in place, which through a link would rewrite the input.
Nothing is ever written over an input unless ``--in-place`` says so.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional, Sequence

from upgd_migrate.checkpoint.formats.base import is_dcp_folder
from upgd_migrate.errors import UpgdMigrateError, deferred_signals, note_commit
from upgd_migrate.fileio import clone_file

EXTENSIONS = (".pt", ".pth", ".ckpt", ".zip")


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


def discover_checked(paths: Sequence[Path]) -> tuple[list[tuple[Path, Path]], list[str]]:
    """``discover``, plus a warning per folder that holds no checkpoint; nothing at all found
    is an error (exit 2): a run over an empty or mistyped folder must not look like a pass."""
    found = discover(paths)
    kinds = ", ".join(f"*{e}" for e in EXTENSIONS)
    empty = [p for p in paths if Path(p).is_dir() and not discover([p])]
    if not found:
        where = ", ".join(str(p) for p in paths)
        raise UpgdMigrateError(f"{where}: no checkpoints found ({kinds})")
    return found, [f"warning: {p}: no checkpoints found ({kinds})" for p in empty]


def target_path(path: Path, rel: Path, output: Optional[Path], many: bool) -> Path:
    """The file ``path`` (``rel`` below its argument) is written to; ``path`` without -o."""
    if output is None:
        return path
    if many or output.is_dir():
        return output / rel
    return output


def refuse_self_overwrite(files: list[tuple[Path, Path]], output: Path, many: bool) -> None:
    """``-o same.pt`` or ``-o .`` resolving onto an input: that is --in-place, so say so."""
    for path, rel in files:
        if target_path(path, rel, output, many).resolve() == path.resolve():
            raise UpgdMigrateError(f"-o {output}: would write {path} over itself; "
                                   "pass --in-place to rewrite inputs")


def copy_counterpart(src: Path, dst: Path) -> str:
    """Make ``dst`` a copy of ``src``, atomically replacing what is there (a hard link to
    ``src`` that an older version made included: the input keeps its bytes). Returns "copied".

    The copy is built under a temp name beside ``dst`` and renamed, so an interrupt leaves the
    old ``dst`` or the new one, and no temp file.
    """
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        return _copy_folder(src, dst)
    with deferred_signals():  # the temp name exists only inside the try below
        fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
        os.close(fd)
    try:
        os.unlink(tmp)
        clone_file(src, Path(tmp))
        note_commit()
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return "copied"


def _copy_folder(src: Path, dst: Path) -> str:
    """A DCP folder's counterpart: a copy, never hard links (a later ``dcp.save`` into it
    truncates its files in place, as ``torch.save`` does a file's). Built beside
    ``dst`` under a temp name and renamed, so an interrupt leaves no half folder."""
    if dst.exists():
        raise UpgdMigrateError(f"{dst}: already exists: not overwritten")
    with deferred_signals():
        tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent))
    try:
        shutil.copytree(src, tmp, dirs_exist_ok=True,
                        copy_function=lambda a, b: clone_file(Path(a), Path(b)))
        note_commit()
        os.replace(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return "copied"
