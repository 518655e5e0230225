"""Many files at once: a process pool over the per-file functions of :mod:`upgd_migrate.api`.

``imap(fn, items, jobs)`` yields ``(index, result)`` as each file finishes (``--format jsonl``
streams them); callers that print in input order sort by the index. A file's own failure is a
value its function returns, so one bad file never stops the others.

Interrupts: the workers ignore SIGINT (Ctrl-C reaches the whole process group) and leave it to
the parent, which cancels what has not started and sends each worker SIGTERM. A worker in the
middle of a file raises ``Interrupted`` there, so the writers clean up (no temp file, no unused
backup), and then exits; an idle worker exits at once. Nothing is left running or half-written.

Torch threads: each worker gets ``cpus // jobs`` intra-op threads (at least one), so N workers
do not each spin up a thread per CPU and fight over them.
"""
from __future__ import annotations

import gc
import multiprocessing
import os
import signal
from typing import Any, Callable, Iterator, Sequence

from upgd_migrate import errors

_busy: list[bool] = [False]


def default_jobs() -> int:
    """The CPUs this process may use (``--jobs 0``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _on_term(signum: int, frame: object) -> None:
    if not _busy[0]:
        os._exit(128 + signum)
    errors._handler(signum, frame)  # Interrupted: unwinds the file's writers, then _call exits


def _init_worker(threads: int) -> None:
    errors._received.clear()  # a fork of a parent that is not unwinding
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_term)
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:
        pass


def _call(fn: Callable[[Any], Any], item: Any) -> Any:
    _busy[0] = True
    try:
        return fn(item)
    except BaseException:
        signum = errors.interrupted_by()
        if signum is not None:  # cleaned up on the way here; the parent is unwinding already
            os._exit(128 + signum)
        raise
    finally:
        _busy[0] = False


def _context():
    # fork: the workers start with torch already imported (seconds saved per worker)
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else None)


def _forked_pool(jobs: int, threads: int) -> Any:
    """The pool, its workers forked with the parent's objects frozen out of the garbage
    collector (``gc.freeze``): a worker's first collection would otherwise touch every object
    it inherited, copying each page of torch's heap (80-90 ms before its first file)."""
    frozen_before = gc.get_freeze_count()  # a caller's own freeze is left as it is
    gc.freeze()
    try:
        return _context().Pool(jobs, initializer=_init_worker, initargs=(threads,))
    finally:
        if not frozen_before:
            gc.unfreeze()  # the workers keep theirs frozen; the parent collects as before


def _indexed(job: tuple[Callable[[Any], Any], int, Any]) -> tuple[int, Any]:
    fn, index, item = job
    return index, _call(fn, item)


def imap(fn: Callable[[Any], Any], items: Sequence[Any], jobs: int) -> Iterator[tuple[int, Any]]:
    """``(index, fn(item))`` for every item, as they finish; ``jobs`` 0: one per CPU."""
    jobs = min(jobs or default_jobs(), len(items))
    if jobs <= 1:
        for i, item in enumerate(items):
            yield i, fn(item)
        return
    threads = max(1, default_jobs() // jobs)
    pool = _forked_pool(jobs, threads)
    try:
        yield from pool.imap_unordered(_indexed, [(fn, i, x) for i, x in enumerate(items)])
        pool.close()
    except BaseException:
        pool.terminate()  # SIGTERM to each worker: see the module's docstring
        raise
    finally:
        pool.join()
