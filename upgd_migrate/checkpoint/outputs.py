"""Where ``-o OUT`` puts each input, and the counterparts of inputs that need no change.

``-o OUTDIR`` over a folder must give a training run pointed at OUTDIR every checkpoint, not
only the migrated ones: an input that needs no change gets a hard link there (no space, no
time), or a copy where the file system has no hard links. Nothing is ever written over an
input unless ``--in-place`` says so.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

from upgd_migrate.errors import UpgdMigrateError, deferred_signals


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


def link_or_copy(src: Path, dst: Path) -> str:
    """Make ``dst`` a counterpart of ``src``, atomically replacing what is there.

    Returns "linked" or "copied". The counterpart is built under a temp name beside ``dst``
    and renamed, so an interrupt leaves the old ``dst`` or the new one, and no temp file.
    """
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() and os.path.samefile(src, dst):
        return "linked"
    if src.is_dir():
        return _copy_folder(src, dst)
    with deferred_signals():  # the temp name exists only inside the try below
        fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
        os.close(fd)
    try:
        os.unlink(tmp)
        try:
            os.link(src, tmp)
            how = "linked"
        except OSError:  # another file system, or none with hard links
            shutil.copy2(src, tmp)
            how = "copied"
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return how


def _copy_folder(src: Path, dst: Path) -> str:
    """A DCP folder's counterpart: a copy, never hard links (a later ``dcp.save`` into it
    truncates its files in place, which would reach the input through a link). Built beside
    ``dst`` under a temp name and renamed, so an interrupt leaves no half folder."""
    if dst.exists():
        raise UpgdMigrateError(f"{dst}: already exists: not overwritten")
    with deferred_signals():
        tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent))
    try:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
        os.replace(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return "copied"
