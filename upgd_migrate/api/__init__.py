"""Plain functions over one checkpoint: what the CLI maps over files, and what a process
pool, Ray or Dask can map over a bucket.

Each takes one path (a checkpoint file or a DCP folder) and keyword options named like the
CLI's, and returns a plain dict of builtins: the very entry the command's ``--format json``
envelope holds for that file (``inspect``: a ``files`` entry of ``checkpoint inspect``;
``migrate``: of ``checkpoint``, plus ``verify`` when asked; ``verify``: of ``verify``). A file
that cannot be used is a value too, ``{"path", "error"}`` (``migrate``: status ``error``), never
an exception, so one bad file does not stop a map over thousands. Results pickle.

This package may import ``checkpoint``, ``verify``, ``config`` and the shared core; ``pool`` is
the process pool the CLI's ``--jobs`` runs these functions in.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Optional, Sequence

from upgd_migrate.verify.drive import DEFAULT_STEPS
from upgd_migrate.verify.sample import DEFAULT_SAMPLE

__all__ = ["inspect", "migrate", "verify"]


def _on_local(path, storage_options, fn) -> dict:
    """``fn`` on ``path``, or on a staged copy of it when it is a URL (paths shown as URLs):
    read by range (a DCP folder's entries, a torch zip's pickle and states), never the
    weights."""
    from upgd_migrate import storage
    from upgd_migrate.checkpoint.io import sparse_reads
    from upgd_migrate.errors import UpgdMigrateError

    if not storage.is_url(path):
        return fn(Path(path))
    try:
        with storage.staged([path], storage_options, lazy=True) as (local, names), \
                sparse_reads("states"):
            return storage.renamed(fn(local[0]), names)
    except UpgdMigrateError as e:
        return {"path": path, "error": str(e)}


def inspect(path: str | os.PathLike, *, allow_globals: Sequence[str] = (),
            storage_options: Optional[dict] = None) -> dict:
    """What ``path`` holds: container, size and, per state, class, generation and the
    migrations that would apply (``checkpoint inspect --format json``'s entry)."""
    from upgd_migrate.checkpoint.inspect import inspect_path

    return _on_local(path, storage_options, lambda p: inspect_path(p, tuple(allow_globals)))


def verify(path: str | os.PathLike, *, config: Optional[str | os.PathLike] = None,
           steps: int = DEFAULT_STEPS, seed: int = 0, sample: int = DEFAULT_SAMPLE,
           allow_globals: Sequence[str] = (), storage_options: Optional[dict] = None) -> dict:
    """Run every optimizer state in ``path`` and check its noise (``verify``'s entry: ``states``
    with their checks and metrics, and ``skipped``: the other optimizers' states)."""
    from upgd_migrate.verify.run import file_json, verify_file

    cfg = None
    if config is not None:
        from upgd_migrate.verify.config import read_config

        cfg = read_config(Path(config))
    return _on_local(path, storage_options, lambda p: file_json(
        verify_file(p, cfg, steps, seed, tuple(allow_globals), sample)))


def migrate(path: str | os.PathLike, *, output: Optional[str | os.PathLike] = None,
            in_place: bool = False, backup: Optional[str] = None, check: bool = False,
            dry_run: bool = False, sigma_ratio: Optional[float] = None,
            instant_noise: bool = False, verify: bool = False,
            allow_globals: Sequence[str] = (), storage_options: Optional[dict] = None) -> dict:
    """Migrate ``path`` to ``output`` (a file, or a folder for a DCP folder) or in place; with
    ``check`` or ``dry_run`` write nothing (``checkpoint``'s entry: ``status``, ``output``,
    ``states`` with what ran, and ``verify`` when ``verify`` is true)."""
    from upgd_migrate import storage
    from upgd_migrate.checkpoint import pipeline as P
    from upgd_migrate.checkpoint.runfolder import Found
    from upgd_migrate.checkpoint.steps import Context
    from upgd_migrate.checkpoint.run import file_json, migrate_file

    if not (check or dry_run) and (output is None) == (not in_place):
        raise ValueError("say where to write: output=... or in_place=True "
                         "(or check/dry_run to only report)")
    mode = P.WriteBack.CHECK if check else (P.WriteBack.DRY_RUN if dry_run else
                                            P.WriteBack.WRITE)
    opts = P.Options(mode, Context(sigma_ratio, instant_noise=instant_noise),
                     None if output is None or storage.is_url(output) else Path(output),
                     in_place, backup, tuple(allow_globals), real_states=verify)

    def one(local, out=None) -> dict:
        options = dataclasses.replace(opts, output=Path(out) if out is not None else opts.output)
        found = Found(local, Path(local.name), "torch", walked=False)  # named: the strict rule
        return file_json(migrate_file(found, options, False, verify), verify)

    if not (storage.is_url(path) or storage.is_url(output)):
        return one(Path(path))
    return _migrate_at_urls(one, path, output, backup if in_place else None, storage_options)


def _migrate_at_urls(one, path, output, backup, storage_options) -> dict:
    """``one(local, out)`` on staged copies; what it wrote goes back (see ``storage``)."""
    from upgd_migrate import storage
    from upgd_migrate.errors import UpgdMigrateError

    box: dict = {}
    names: dict = {}

    def run(paths, out) -> int:
        box["entry"] = one(Path(paths[0]), out)
        return 2 if box["entry"]["status"] == "error" else 0

    try:
        storage.migrate_urls(run, [path], output, backup, storage_options, names, lazy=True)
    except UpgdMigrateError as e:
        return {**box.get("entry", {"path": str(path)}), "status": "error", "error": str(e)}
    return storage.renamed(box["entry"], names)
