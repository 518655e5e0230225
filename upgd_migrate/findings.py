"""What a check reports: a Finding at a 1-based line and column, with a severity."""
from __future__ import annotations

import enum
from dataclasses import dataclass


class Severity(str, enum.Enum):
    """How bad a finding is. Errors fail a run; warnings fail it only with --strict."""

    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


@dataclass(frozen=True)
class Finding:
    """One problem at ``path:line:col`` (both 1-based). ``fix`` names the fixing command.

    A finding about a plain mapping (``upgd_migrate.schema.validate``) has no text to point
    into: its path is empty, line and col are 0, and ``loc`` holds the keys and indices that lead
    to the value from the mapping given (``("model", "optimizer_kwargs", "sigma")``).
    """

    path: str
    line: int
    col: int
    code: str
    severity: Severity
    message: str
    fix: str | None = None
    loc: tuple[str | int, ...] = ()

    def sort_key(self) -> tuple[str, int, int, str]:
        return (self.path, self.line, self.col, self.code)
