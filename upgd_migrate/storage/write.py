"""Uploads to an object store, whole or absent: the write side of :mod:`upgd_migrate.storage`.

Guarantees per backend (an object store has no rename):

- S3 (s3fs): a file up to ``PART`` bytes is one PUT; a bigger one is a multipart upload this
  module drives itself, completed only after every part is in and aborted on any error, SIGINT
  or SIGTERM. Either way the object appears only when complete. ``--backup`` is a PUT with
  ``IfNoneMatch: "*"``: an existing backup object is never overwritten. (An unchanged object
  of ``-o`` in the inputs' own store is copied by the store: :mod:`upgd_migrate.storage.mirror`.)
- GCS (gcsfs): uploads are resumable sessions that finalise at the end (whole or absent);
  the backup is checked for existence first (a race with another writer is possible).
- Hugging Face Hub (``hf://``): each upload is a commit (whole or absent).
- ``memory://`` and ``file://``: fsspec's own writes (``file://`` is not atomic: prefer the
  plain local path, which the commands write atomically).

It imports :mod:`upgd_migrate.storage` (file systems, one-line errors), :mod:`upgd_migrate.errors`
and :mod:`upgd_migrate.fileio`; nothing of the commands.
"""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

from upgd_migrate import errors
from upgd_migrate.errors import UpgdMigrateError, deferred_signals
from upgd_migrate.sparsefile import is_sparse
from upgd_migrate.storage import describe, filesystem, scheme_of

PART = 64 * 1024 * 1024  # bytes per multipart part; a smaller file is one PUT


def part_bytes() -> int:
    """``PART``, or ``UPGD_MIGRATE_PART_BYTES``."""
    return env_bytes("UPGD_MIGRATE_PART_BYTES", PART)


def env_bytes(name: str, default: int) -> int:
    """A size from the environment variable ``name`` (``default`` where unset), at least S3's
    5 MiB minimum part."""
    return max(5 * 1024 * 1024, int(os.environ.get(name, default)))


def files_under(root: Path) -> list[Path]:
    """``root`` if it is a file, else every file below it, sorted."""
    return [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())


def object_url(url: str, root: Path, path: Path) -> str:
    """The object ``path`` (``root`` itself, or a file below the folder ``root``) is at, where
    ``root`` is at ``url``."""
    rel = path.relative_to(root).as_posix() if root.is_dir() else ""
    return f"{url.rstrip('/')}/{rel}" if rel else url


def settle(timeout: float = 10.0) -> None:
    """Cancel the requests a signal left running on fsspec's event loop (the main thread only
    waits on them), and let them unwind there. Left alone, one lands after the run gave up on
    it, and the interpreter tears it down at exit with a traceback under the run's one line."""
    asyn = sys.modules.get("fsspec.asyn")
    loop = asyn.loop[0] if asyn is not None else None
    if loop is None or not loop.is_running():
        return
    import asyncio

    async def cancel_the_others() -> None:
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    with deferred_signals():  # a second signal must not strand the wait
        try:
            asyncio.run_coroutine_threadsafe(cancel_the_others(), loop).result(timeout)
        except Exception:  # a request that will not unwind: the exit still comes
            pass


@contextmanager
def reported(url: str) -> Iterator[None]:
    """A backend's error inside the block as one line naming ``url``; a signal (even one that
    C++ code or a library turned into another error) and our own errors pass through."""
    try:
        yield
    except errors.Interrupted:
        settle()
        raise
    except UpgdMigrateError:
        raise
    except Exception as e:
        errors.raise_if_interrupted()
        raise UpgdMigrateError(describe(url, e)) from None


def upload(fs, local: Path, url: str, create_only: bool = False) -> None:
    """Put ``local`` at ``url``, whole or not at all (see the module's docstring)."""
    with reported(url):
        try:
            if scheme_of(url) in ("s3", "s3a"):
                _s3_upload(fs, local, url, create_only)
            else:
                if create_only and fs.exists(url):
                    raise FileExistsError(url)
                fs.put_file(str(local), url)
        except FileExistsError:
            raise UpgdMigrateError(f"{url}: backup already exists: not overwritten, object "
                                   "left unchanged (remove it or pick another --backup "
                                   "suffix)") from None


def _s3_upload(fs, local: Path, url: str, create_only: bool) -> None:
    bucket, key, _ = fs.split_path(url)
    cond = {"IfNoneMatch": "*"} if create_only else {}
    size, part = local.stat().st_size, part_bytes()
    try:
        if size <= part:
            fs.call_s3("put_object", Bucket=bucket, Key=key, Body=local.read_bytes(), **cond)
            return
        _multipart(fs, local, bucket, key, part, cond)
    except Exception as e:
        code = (getattr(e, "response", None) or {}).get("Error", {}).get("Code")
        if create_only and (code == "PreconditionFailed" or "PreconditionFailed" in str(e)):
            raise FileExistsError(url) from None
        raise


def _multipart(fs, local: Path, bucket: str, key: str, part: int, cond: dict) -> None:
    with multipart_upload(fs, bucket, key, cond) as (upload_id, parts):
        with open(local, "rb") as fh:
            while chunk := fh.read(part):
                n = len(parts) + 1
                r = fs.call_s3("upload_part", Bucket=bucket, Key=key, UploadId=upload_id,
                               PartNumber=n, Body=chunk)
                parts.append({"ETag": r["ETag"], "PartNumber": n})


@contextmanager
def multipart_upload(fs, bucket: str, key: str, cond: Mapping[str, str] | None = None,
                     ) -> Iterator[tuple[str, list[dict]]]:
    """An S3 multipart upload: the block adds its parts to the list; it is completed when the
    block ends, and aborted (no partial object, no parts kept) on an error, SIGINT or SIGTERM."""
    upload_id = fs.call_s3("create_multipart_upload", Bucket=bucket, Key=key)["UploadId"]
    parts: list[dict] = []
    try:
        yield upload_id, parts
        errors.raise_if_interrupted()
        with deferred_signals():  # completed, or not started: never half
            fs.call_s3("complete_multipart_upload", Bucket=bucket, Key=key, UploadId=upload_id,
                       MultipartUpload={"Parts": parts}, **(cond or {}))
        upload_id = None
    finally:
        if upload_id is not None:
            settle()  # a part in flight could land after the abort and keep its bytes
            with deferred_signals():
                try:
                    fs.call_s3("abort_multipart_upload", Bucket=bucket, Key=key,
                               UploadId=upload_id)
                except Exception:
                    pass


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime) of every file under ``root`` (or of ``root``), by path."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in files_under(root)}


def push_changes(local: Path, url: str, before: Mapping[str, tuple[int, int]],
                 options: Mapping[str, Any] | None, backup_suffix: str | None = None) -> int:
    """Upload what changed under ``local`` to ``url``: data objects first, each DCP folder's
    ``.metadata`` (the commit marker readers look for) last; a new backup create-if-absent."""
    after = snapshot(local)
    changed = [Path(p) for p, sig in sorted(after.items()) if before.get(p) != sig]
    is_backup = (lambda p: p.name.endswith(backup_suffix)) if backup_suffix else (lambda p: False)
    # backups first (a refused one stops everything), then data, then the commit markers
    changed.sort(key=lambda p: 0 if is_backup(p) else 2 if p.name == ".metadata" else 1)
    fs = filesystem(url, options)
    with tally(len(changed)) as done:
        for path in changed:
            if is_sparse(path):  # never upload holes over the bucket's bytes
                raise UpgdMigrateError(f"{path}: a partial stand-in changed: nothing uploaded")
            upload(fs, path, object_url(url, local, path), create_only=is_backup(path))
            done[0] += 1
    return len(changed)


@contextmanager
def tally(total: int) -> Iterator[list[int]]:
    """A failed write says how many of the run's ``total`` objects went out before it (each
    whole): the run's own report, printed before the upload, counted local results."""
    done = [0]
    try:
        yield done
    except UpgdMigrateError as e:
        raise UpgdMigrateError(f"{e}; {done[0]} of {total} objects written") from None
