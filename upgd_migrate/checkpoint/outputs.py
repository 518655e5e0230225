"""Where ``-o OUT`` puts each input, and the counterparts of inputs that need no change.

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
from typing import Optional

from upgd_migrate.errors import UpgdMigrateError, deferred_signals, note_commit
from upgd_migrate.fileio import clone_file


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
