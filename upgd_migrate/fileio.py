"""Reading config text safely and writing files atomically.

A bad file is reported as :class:`UnreadableFile` (a value for the caller to turn into a
finding), never an exception that stops a run over many files.
"""
from __future__ import annotations

import codecs
import os
import shutil
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Callable, Iterator

from upgd_migrate import sparsefile
from upgd_migrate.errors import deferred_signals, note_commit

# Real configs are a few KiB; anything this big is not a hand-written config and parsing it
# in pure Python would stall a pre-commit hook.
MAX_BYTES = 5 * 1024 * 1024


# UTF-32 first: its little-endian mark starts with UTF-16's.
_WIDE_BOMS = ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
              (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16"))


TEMP_PREFIX = ".upgd-migrate-"  # our temp files' names start so (a walk carries them)
_ONE_SYNC = False  # inside one_sync(): no fsync per file, one sync at the end


@contextmanager
def one_sync(folder: Path) -> Iterator[None]:
    """Writes into a new output tree (``-o OUT`` of a run), made durable together at the end.

    Inside, files and folders are not fsynced one by one: one ``syncfs`` of ``folder``'s file
    system when the block ends without error makes the whole tree durable at once, as ``cp -r``
    followed by ``sync`` does, and reports a write-back error as an ``OSError`` (each file is
    still written under a temp name and renamed, so no reader ever sees half a file). Never for
    a rewrite in place: there the fsync before the rename is what keeps the original safe.
    """
    global _ONE_SYNC
    _ONE_SYNC = True
    try:
        yield
    finally:
        _ONE_SYNC = False
    _syncfs(folder)


def _syncfs(folder: Path) -> None:
    folder = next(p for p in (folder, *folder.parents) if p.exists())  # OUT, or where it was
    fd = os.open(folder, os.O_RDONLY)
    try:
        syncfs = _libc_call("syncfs")
        if syncfs is None:  # not Linux: sync everything (errors are not reported there)
            os.sync()
        elif syncfs(fd) != 0:
            import ctypes

            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), str(folder))
    finally:
        os.close(fd)


_LIBC: dict[str, Any] = {}


def _libc_call(name: str) -> Any:
    """The C library's function ``name`` (None where there is none), from the symbols loaded
    already: ``ctypes.util.find_library`` runs ``ldconfig -p``, 40-70 ms a process."""
    if name not in _LIBC:
        import ctypes

        try:
            _LIBC[name] = getattr(ctypes.CDLL(None, use_errno=True), name, None)
        except (OSError, TypeError):  # no dlopen(NULL) (Windows)
            _LIBC[name] = None
        if name == "sync_file_range" and _LIBC[name] is not None:
            _LIBC[name].argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    return _LIBC[name]


def fsync(fd: int) -> None:
    """The file's data durable now; inside :func:`one_sync`, on its way to the disk (so the
    sync at the end has less to wait for)."""
    if not _ONE_SYNC:
        os.fsync(fd)
    elif _WRITEBACK_MIN <= os.fstat(fd).st_size <= _WRITEBACK_MAX:
        start_writeback(fd)


# Started early only for files of these sizes: on a big one sync_file_range waits for the
# disk's queue (a 2 GB DCP copy got slower); on a small one the call (0.3 ms) costs more
# than the sync at the end saves. Mid-sized ones return at once while the disk works.
_WRITEBACK_MIN, _WRITEBACK_MAX = 1 << 20, 64 << 20
_SYNC_FILE_RANGE_WRITE = 2  # linux/fs.h: start writing the dirty pages back, do not wait


def start_writeback(fd: int, offset: int = 0, nbytes: int = 0) -> None:
    """Start writing ``nbytes`` at ``offset`` of ``fd`` (0: to the end) to the disk, without
    waiting (``sync_file_range``): the disk works while the run goes on, instead of all at
    once in the sync at the end. Best effort: where there is no such call, that sync does it."""
    call = _libc_call("sync_file_range")
    if call is not None:
        call(fd, offset, nbytes, _SYNC_FILE_RANGE_WRITE)


class UnreadableFile(Exception):
    """The file cannot be read as UTF-8 text; the message says why, without the path."""


def read_text(path: str, max_bytes: int | None = None) -> str:
    """Return the file's text (a UTF-8 BOM dropped) or raise :class:`UnreadableFile`."""
    return read_text_and_bom(path, max_bytes)[0]


def read_text_and_bom(path: str, max_bytes: int | None = None) -> tuple[str, bool]:
    """(text without a UTF-8 BOM, whether it had one): a rewrite must put the BOM back."""
    max_bytes = MAX_BYTES if max_bytes is None else max_bytes
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise UnreadableFile(f"cannot read: {e.strerror or e}") from e
    if len(data) > max_bytes:
        raise UnreadableFile(f"larger than {max_bytes / 2**20:g} MiB: not a config")
    for bom, name in _WIDE_BOMS:  # before the NUL check: these are text, just not UTF-8
        if data.startswith(bom):
            raise UnreadableFile(f"{name} text (byte-order mark): re-save it as UTF-8")
    if b"\0" in data[:8192]:
        raise UnreadableFile("binary file (NUL bytes): not a YAML config")
    try:
        return data.decode("utf-8-sig"), data.startswith(codecs.BOM_UTF8)
    except UnicodeDecodeError as e:
        raise UnreadableFile(f"not UTF-8 text (byte {e.start})") from e


def _temp_copy(path: str, raw: bytes, mode_of: str) -> str:
    """A synced temp file beside ``path`` holding ``raw``, with the mode of ``mode_of``."""
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        with deferred_signals():
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=TEMP_PREFIX, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        if os.path.exists(mode_of):
            os.chmod(tmp, os.stat(mode_of).st_mode & 0o7777)
    except BaseException:
        _discard(tmp)
        raise
    return tmp


@contextmanager
def atomic_writer(path: str | os.PathLike) -> Iterator[IO[bytes]]:
    """A file object whose content replaces ``path`` only when the block ends without error.

    The temp file lives in the target's folder (``os.replace`` is atomic only within one file
    system) and is fsynced before the rename, and the folder after it, so a crash or power loss
    leaves the old file or the new one, never half of either. The file keeps the replaced
    file's mode (mkstemp's 0600 would otherwise leak into every rewritten file).
    """
    path = Path(path)
    tmp = None
    try:
        with deferred_signals():  # the temp file and its name, or neither
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            fsync(fh.fileno())
        os.chmod(tmp, path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~_umask())
        note_commit()  # a signal after the replace must not report this write as interrupted
        os.replace(tmp, path)
    except OSError as e:  # a full disk, say: name the file the user asked for, not the temp
        _discard(tmp)
        raise _naming(e, path) from None
    except BaseException:  # Ctrl-C, SIGTERM (errors.Interrupted): no temp file left behind
        _discard(tmp)
        raise
    _fsync_dir(path.parent)


def _discard(tmp: str | None) -> None:
    if tmp is not None:
        Path(tmp).unlink(missing_ok=True)


def _naming(e: OSError, path: Path) -> OSError:
    """The same error (same subclass, by errno) naming ``path`` instead of a hidden temp file."""
    if e.errno is None:
        return e
    return OSError(e.errno, e.strerror, str(path))


def atomic_write(path: str | os.PathLike, data: str | bytes) -> None:
    """Replace ``path`` atomically with ``data`` (text is written as UTF-8)."""
    with atomic_writer(path) as fh:
        fh.write(data.encode("utf-8") if isinstance(data, str) else data)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def _fsync_dir(folder: Path) -> None:
    if _ONE_SYNC:
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_create(path: str, data: bytes, mode_of: str) -> None:
    """Create ``path`` whole or not at all; raise FileExistsError rather than replace a file.

    A hard link is atomic and fails on an existing name, so a crash never leaves half a
    backup that a later run would then refuse to overwrite.
    """
    with deferred_signals():  # a config-sized write: an interrupt waits for it, then unwinds
        tmp = _temp_copy(path, data, mode_of)
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise
        except OSError:  # a filesystem without hard links: exclusive create is the next best
            with open(path, "xb") as f:
                f.write(data)
        finally:
            os.unlink(tmp)


_FICLONE = 0x40049409  # linux/fs.h: share the source's extents (copy-on-write)


def clone_file(src: Path, dst: Path, check: Callable[[], None] = lambda: None) -> None:
    """Copy ``src`` into the new file ``dst`` (never an existing one), fsynced, with its mode.

    A reflink where the file system shares extents (btrfs, XFS: no space, no time, and a later
    write to either file leaves the other alone), else a copy inside the kernel, else through
    user space. Never a hard link: a writer that truncates and rewrites a file in place
    (``torch.save``, ``dcp.save``) would change both names' bytes. ``check`` is called between
    chunks of a long copy (a copy in a thread raises there to stop).
    """
    with open(dst, "xb") as d:
        clone_into(src, d, check)


def clone_into(src: Path, d: IO[bytes], check: Callable[[], None] = lambda: None) -> None:
    """:func:`clone_file` into ``d``, a new empty file open for writing (a temp file that
    ``mkstemp`` made: no second create), which gets ``src``'s mode."""
    if not sparsefile.holes_are_kept():  # a bucket's stand-in: the copy gets its bytes
        sparsefile.fill(src)
    with open(src, "rb") as s:
        if sparsefile.is_sparse(src) and hasattr(os, "SEEK_DATA"):  # holes stay holes
            sparsefile.copy_data_extents(s, d)
        elif not _reflink(s, d):
            _kernel_copy(s, d, check)
        if os.chmod in os.supports_fd:  # not Windows, where a mode is a read-only bit
            os.chmod(d.fileno(), stat.S_IMODE(os.fstat(s.fileno()).st_mode))
        fsync(d.fileno())


def _reflink(s: IO[bytes], d: IO[bytes]) -> bool:
    try:
        import fcntl
    except ImportError:  # not POSIX
        return False
    try:
        fcntl.ioctl(d.fileno(), _FICLONE, s.fileno())
        return True
    except OSError:  # no reflinks here (ext4, tmpfs, another file system)
        return False


_COPY_CHUNK = 128 << 20


def _kernel_copy(s: IO[bytes], d: IO[bytes], check: Callable[[], None]) -> None:
    """Copy inside the kernel (copy_file_range), else through user space; ``check`` between
    chunks."""
    try:
        while os.copy_file_range(s.fileno(), d.fileno(), _COPY_CHUNK):
            check()
    except (AttributeError, OSError):  # not Linux, or across file systems on an old kernel
        s.seek(0)
        d.seek(0)
        d.truncate()
        shutil.copyfileobj(s, d, 16 << 20)
        d.flush()
