"""One fatal base exception for user-facing errors; the CLI prints it without a traceback.

Also the interrupt contract: SIGINT and SIGTERM raise :class:`Interrupted` in the main thread,
every writer cleans up on ``BaseException``, and the CLI turns it into one line and exit
128 + signal (130 for Ctrl-C, 143 for SIGTERM, as shells report them).
"""
from __future__ import annotations

import signal
from contextlib import contextmanager
from typing import Iterator


class UpgdMigrateError(Exception):
    """An error caused by the user's input, reported as a one-line message (exit 2)."""

    exit_code = 2


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived. A BaseException, like KeyboardInterrupt, so that no
    ``except Exception`` swallows it; not a KeyboardInterrupt, so click does not turn it into
    its own "Aborted!"."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.exit_code = 128 + signum


_received: list[int] = []


def _handler(signum: int, frame: object) -> None:
    if _received:  # a second signal while cleaning up: the first one is already unwinding
        return
    _received.append(signum)
    raise Interrupted(signum)


def raise_if_interrupted() -> None:
    """Re-raise a signal that C++ code (torch's writer, say) turned into a RuntimeError.

    Call it first in every handler that turns exceptions into per-file errors.
    """
    if _received:
        raise Interrupted(_received[0])


def interrupted_by() -> int | None:
    return _received[0] if _received else None


@contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold SIGINT/SIGTERM back for a few statements that create a file and record its name
    (mkstemp, a backup's link): a signal in between would strand a file nobody knows of. The
    signal is delivered, and raises, as soon as the block ends."""
    mask = getattr(signal, "pthread_sigmask", None)
    if mask is None:  # Windows: no signal masks
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM}
    old = mask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        mask(signal.SIG_SETMASK, old)


@contextmanager
def signals_interrupt() -> Iterator[None]:
    """SIGINT and SIGTERM raise :class:`Interrupted` inside the block (main thread only)."""
    _received.clear()
    try:
        previous = {s: signal.signal(s, _handler) for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread: leave the host's handlers alone
        yield
        return
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)
