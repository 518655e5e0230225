"""One fatal base exception for user-facing errors; the CLI prints it without a traceback."""
from __future__ import annotations


class UpgdMigrateError(Exception):
    """An error caused by the user's input, reported as a one-line message (exit 2)."""

    exit_code = 2
