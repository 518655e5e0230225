"""A DCP folder's data files copied toward ``-o OUT`` while its state is read and migrated.

``-o`` of a DCP folder writes a complete new folder whose data files are the input's, byte for
byte: the migration only adds a small data file and a new ``.metadata``. Those copies do not
depend on the migration, so they start first, in a thread, into the temp folder beside OUT that
the output is then built in. The copy runs in the kernel (``copy_file_range``: no Python, the
GIL released) while this thread imports DCP, reads the Adam moments and calibrates; inside
:func:`~upgd_migrate.fileio.one_sync` each copied chunk is on its way to the disk as the next
is copied. The writer then waits for the copy, adds its files and renames the folder into place
(:meth:`CopyAhead.take`); whatever does not take it (an error, a file left unmigrated, an
interrupt) cancels it (:meth:`CopyAhead.cancel`): the copy stops and the temp folder goes.

Imports only the shared core: it must not wait for the DCP import it runs beside.
"""
from __future__ import annotations

import shutil
import tempfile
import threading
from pathlib import Path
from typing import Optional

from upgd_migrate.checkpoint.formats.base import DCP_METADATA
from upgd_migrate.errors import deferred_signals
from upgd_migrate.fileio import TEMP_PREFIX, clone_file
from upgd_migrate.sparsefile import is_sparse

def data_files(src: Path) -> list[Path]:
    """The files of a DCP folder that ``-o`` copies as they are: all but ``.metadata`` (and
    temp files an interrupted in-place run of ours may have left)."""
    return [f for f in sorted(src.iterdir())
            if f.is_file() and f.name != DCP_METADATA and not f.name.startswith(TEMP_PREFIX)]


class _Cancelled(Exception):
    pass


class CopyAhead:
    """The data files of ``src`` being copied, in a thread, into a temp folder beside ``dst``."""

    def __init__(self, src: Path, dst: Path) -> None:
        self.src, self.dst = src, dst
        self.copied: list[str] = []
        self._error: Optional[BaseException] = None
        self._stop = threading.Event()
        self._made = [p for p in dst.parents if not p.exists()]  # removed again on cancel
        dst.parent.mkdir(parents=True, exist_ok=True)
        # the temp folder and the thread, or neither; the thread starts with SIGINT and
        # SIGTERM blocked, so they always reach the main thread
        with deferred_signals():
            self.folder: Optional[Path] = Path(tempfile.mkdtemp(
                prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent))
            self._thread = threading.Thread(target=self._run, name="upgd-migrate copy ahead",
                                            daemon=True)
            self._thread.start()

    @classmethod
    def start(cls, src: Path, dst: Path) -> Optional["CopyAhead"]:
        """Start copying, unless ``dst`` exists already (the writer refuses that, unchanged)
        or a data file is a sparse stand-in of a bucket's object (the migration fetches into
        it while it is read: a copy taken meanwhile could hold holes the run later filled)."""
        if dst.exists() or any(is_sparse(f) for f in data_files(src)):
            return None
        return cls(src, dst)

    def _check(self) -> None:
        if self._stop.is_set():
            raise _Cancelled()

    def _run(self) -> None:
        try:
            for f in data_files(self.src):
                self._check()
                clone_file(f, self.folder / f.name, self._check)
                self.copied.append(f.name)
        except BaseException as e:  # reported to the writer, in the main thread
            self._error = e

    def take(self) -> Path:
        """Wait for the copy; its temp folder, now the writer's (to fill, rename or remove).
        Raises what stopped the copy (a full disk: ``OSError``)."""
        self._thread.join()
        folder, self.folder = self.folder, None
        if self._error is not None:
            shutil.rmtree(folder, ignore_errors=True)
            raise self._error
        return folder

    def cancel(self) -> None:
        """Stop the copy and remove its temp folder (nothing once taken)."""
        self._stop.set()
        self._thread.join()
        if self.folder is None:
            return
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder = None
        for parent in self._made:  # deepest first; one that holds something else stays
            try:
                parent.rmdir()
            except OSError:
                break
