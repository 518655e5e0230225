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
# A signal that came after a write was committed (its os.replace done) and before the next
# piece of work began: the run finishes that piece and reports it (see note_commit).
_late: list[int] = []
_committed: list[bool] = []


def _handler(signum: int, frame: object) -> None:
    if _received:  # a second signal while cleaning up: the first one is already unwinding
        return
    if _committed:
        _late.append(signum)
        return
    _received.append(signum)
    raise Interrupted(signum)


def note_commit() -> None:
    """A result is about to be committed (called just before the ``os.replace`` that publishes
    it): from here a signal no longer unwinds the run, which would report "interrupted" over a
    file that was written. It waits for :func:`resume_interrupts`, where the next piece of work
    begins; when none follows, the run finishes and exits with its own code."""
    if not _committed:
        _committed.append(True)


def resume_interrupts() -> None:
    """The next piece of work (a file, a verify pass) begins: a signal that waited since the
    last commit interrupts the run here, and later ones at once again."""
    _committed.clear()
    if _late:
        signum = _late[0]
        _late.clear()
        _received.append(signum)
        raise Interrupted(signum)


def late_signal() -> int | None:
    """The signal that arrived after the run's last commit and was not acted on, if any."""
    return _late[0] if _late else None


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
def signals_interrupt(until_exit: bool = False) -> Iterator[None]:
    """SIGINT and SIGTERM raise :class:`Interrupted` inside the block (main thread only).

    ``until_exit``: the block is the whole process (the command line's run). When it ends, the
    run's outcome is decided and printed; a signal during the interpreter's shutdown that
    follows (torch makes it last a while) would kill the process by the signal, an exit status
    that says "interrupted" over a finished run. Such signals are ignored instead.
    """
    _received.clear()
    _late.clear()
    _committed.clear()
    try:
        previous = {s: signal.signal(s, _handler) for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread: leave the host's handlers alone
        yield
        return
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, signal.SIG_IGN if until_exit else old)
        _committed.clear()
