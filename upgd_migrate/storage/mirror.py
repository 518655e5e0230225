"""``-o URL`` of inputs in the same object store: unchanged objects are copied by the store.

A run with ``-o`` writes, locally, every file of its inputs at its relative path: migrated ones
rewritten, the others byte-for-byte copies. Sent as they are, the copies would cross the network
twice (downloaded to stage, uploaded to publish). When the output lies in the store the inputs
came from, a copy is instead a server-side copy (S3 ``CopyObject``, or ``UploadPartCopy`` parts
for a large object): no byte of it passes through this machine, and the inputs can be staged
sparsely (their DCP data objects are never downloaded). Only new or migrated files are uploaded,
and each DCP folder's ``.metadata`` (the commit marker) goes last.

A file counts as a copy only when it is, byte for byte, the staged input at its relative path.
A file that differs from a sparse stand-in (holes where the store has bytes) is refused, never
uploaded. It imports :mod:`upgd_migrate.storage`, its ``write`` module and ``fileio``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from upgd_migrate.errors import UpgdMigrateError
from upgd_migrate.sparsefile import is_sparse
from upgd_migrate.storage import filesystem, is_url, scheme_of
from upgd_migrate.storage.write import (env_bytes, files_under, multipart_upload, object_url,
                                         part_bytes, reported, tally, upload)

COPY_LIMIT = 5 * 1024 ** 3  # S3's largest CopyObject; a bigger object is copied in parts
FAMILIES = {"s3a": "s3", "gcs": "gs"}


def same_store(paths: Sequence[Any], output: Any) -> bool:
    """``output`` and every URL among ``paths`` use one file system (the run's options are
    shared, so one scheme means one endpoint and one set of credentials)."""
    urls = [p for p in paths if is_url(p)]
    family = {FAMILIES.get(scheme_of(u), scheme_of(u)) for u in [*urls, output]}
    return bool(urls) and is_url(output) and len(family) == 1


def _key(url: str) -> str:
    scheme, _, rest = str(url).rstrip("/").partition("://")
    return f"{FAMILIES.get(scheme.lower(), scheme.lower())}://{rest}"


def check_output(paths: Sequence[Any], output: str) -> None:
    """Refuse, before anything is read, ``-o URL`` onto an input or inside an input prefix:
    the local run cannot see that its output is its input (both are staged apart)."""
    out = _key(output)
    for p in paths:
        if not is_url(p):
            continue
        src = _key(p)
        if out == src:
            raise UpgdMigrateError(f"-o {output}: would write {p} over itself; pass --in-place "
                                   "to rewrite inputs")
        if out.startswith(src + "/"):
            raise UpgdMigrateError(f"-o {output}: inside the input folder {p}: a rerun would "
                                   "walk into its own output; pick a folder outside it")


def copy_limit() -> int:
    """``COPY_LIMIT``, or ``UPGD_MIGRATE_COPY_BYTES``."""
    return env_bytes("UPGD_MIGRATE_COPY_BYTES", COPY_LIMIT)


def _candidates(path: Path, out: Path, src: Path) -> Iterator[Path]:
    """Where ``path`` (under the run's output ``out``) came from if it came from ``src``: the
    same relative path below an input folder, or the input named by the output's own name."""
    if out.is_file():
        yield src
        return
    rel = path.relative_to(out)
    if src.is_dir():
        yield src / rel
        if rel.parts[0] == src.name and len(rel.parts) > 1:  # several inputs: OUT/name/...
            yield src.joinpath(*rel.parts[1:])
    elif rel == Path(src.name):
        yield src


def _same_bytes(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while chunk := fa.read(16 << 20):
            if chunk != fb.read(len(chunk)):
                return False
    return True


def source_of(path: Path, out: Path, sources: Mapping[str, str]) -> str | None:
    """The URL ``path`` is an unchanged copy of, or None (it is uploaded)."""
    for local, url in sources.items():
        src = Path(local)
        for cand in _candidates(path, out, src):
            if not cand.is_file():
                continue
            if _same_bytes(cand, path):
                return object_url(url, src, cand)
            if is_sparse(cand):  # built from holes: its bytes are not the object's
                raise UpgdMigrateError(f"{path}: differs from the partial stand-in {cand}: "
                                       "nothing uploaded")
    return None


def push_output(out: Path, url: str, sources: Mapping[str, str],
                options: Mapping[str, Any] | None) -> tuple[int, int]:
    """Publish the run's output ``out`` at ``url``: copies of staged inputs (``sources``: local
    stand-in -> URL, in this store) server side, the rest uploaded; ``.metadata`` last.
    Returns (objects copied, objects uploaded)."""
    files = sorted(files_under(out), key=lambda p: (p.name == ".metadata", str(p)))
    plan = [(p, source_of(p, out, sources)) for p in files]  # refusals before any write
    fs = filesystem(url, options)
    with tally(len(plan)) as done:
        for path, src in plan:
            dst = object_url(url, out, path)
            if src is None:
                upload(fs, path, dst)
            else:
                server_copy(fs, src, dst, path.stat().st_size)
            done[0] += 1
    copied = sum(src is not None for _, src in plan)
    return copied, len(plan) - copied


def server_copy(fs, src: str, dst: str, size: int) -> None:
    """Copy ``src`` to ``dst`` inside the store, whole or not at all."""
    with reported(dst):
        if scheme_of(dst) in ("s3", "s3a"):
            _s3_copy(fs, src, dst, size)
        else:  # gcsfs: a rewrite; memory://: in memory. Each finishes whole or fails.
            fs.cp_file(src, dst)


def _s3_copy(fs, src: str, dst: str, size: int) -> None:
    sb, sk, _ = fs.split_path(src)
    bucket, key, _ = fs.split_path(dst)
    source = {"Bucket": sb, "Key": sk}
    if size <= copy_limit():
        fs.call_s3("copy_object", Bucket=bucket, Key=key, CopySource=source)
        return
    part = part_bytes()
    with multipart_upload(fs, bucket, key) as (upload_id, parts):
        for n, start in enumerate(range(0, size, part), 1):
            r = fs.call_s3("upload_part_copy", Bucket=bucket, Key=key, UploadId=upload_id,
                           PartNumber=n, CopySource=source,
                           CopySourceRange=f"bytes={start}-{min(start + part, size) - 1}")
            parts.append({"ETag": r["CopyPartResult"]["ETag"], "PartNumber": n})
