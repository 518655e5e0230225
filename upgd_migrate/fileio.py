"""Reading config text safely and writing files atomically.

A bad file is reported as :class:`UnreadableFile` (a value for the caller to turn into a
finding), never an exception that stops a run over many files.
"""
from __future__ import annotations

import os
import tempfile

# Real configs are a few KiB; anything this big is not a hand-written config and parsing it
# in pure Python would stall a pre-commit hook.
MAX_BYTES = 5 * 1024 * 1024


class UnreadableFile(Exception):
    """The file cannot be read as UTF-8 text; the message says why, without the path."""


def read_text(path: str, max_bytes: int | None = None) -> str:
    """Return the file's text (a UTF-8 BOM dropped) or raise :class:`UnreadableFile`."""
    max_bytes = MAX_BYTES if max_bytes is None else max_bytes
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise UnreadableFile(f"cannot read: {e.strerror or e}") from e
    if len(data) > max_bytes:
        raise UnreadableFile(f"larger than {max_bytes / 2**20:g} MiB: not a config")
    if b"\0" in data[:8192]:
        raise UnreadableFile("binary file (NUL bytes): not a YAML config")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UnreadableFile(f"not UTF-8 text (byte {e.start})") from e


def atomic_write(path: str, data: str | bytes) -> None:
    """Replace ``path`` so a crash leaves the old file or the new one, never half of either."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".upgd-migrate-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        if os.path.exists(path):
            os.chmod(tmp, os.stat(path).st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
