"""The docs runner's parser and runner: fenced blocks of README.md, docs/*.md and
fixtures/README.md, what each is, and how one runs.

A block is a **transcript** when a line starts with ``$ `` (any fence language: ``text``,
``console``, ``bash``): each ``$ COMMAND`` runs and what follows it, up to the next ``$`` line,
is the output it must print. A ``python`` block is a **snippet**: it runs (the snippets of one
page share one namespace, in page order) and must not raise. Other blocks are prose.

Directives are HTML comments (invisible on GitHub) on the lines right before a block:

- ``<!-- docs-test: skip (REASON) -->``: not run; the test is skipped with REASON, by name.
- ``<!-- docs-test: exit N N ... -->``: the exit codes of the block's commands, in order.
  Without it a command must exit 0 or 1 (2 is a usage error or unusable input).
- ``<!-- docs-test: run -->``: a ``bash`` block without prompts whose lines run as set-up
  commands (each must exit 0; no output is compared).
- ``<!-- docs-test: save FILE -->``: a snippet is also written to FILE in the working folder,
  for a later transcript that runs it (``$ python FILE``).

Normalisation, applied to the printed and the pasted output alike, and nothing else:
trailing spaces and trailing blank lines are dropped, the run's temporary folder is removed
from paths, a line rewritten with ``\\r`` (a progress bar) keeps only its final text, and a
pasted line that is exactly ``...`` matches any number of printed lines.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

FENCE = re.compile(r"^( *)```(\S*)\s*$")  # indented: a block inside a list item
DIRECTIVE = re.compile(r"^<!--\s*docs-test:\s*(.*?)\s*-->\s*$")
ELLIPSIS = "..."


@dataclass
class Block:
    page: str  # relative to the repository root
    line: int  # of the opening fence, 1-based
    lang: str
    body: str
    directives: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def kind(self) -> str | None:
        if any(line.startswith("$ ") for line in self.body.splitlines()):
            return "transcript"
        if self.lang == "python":
            return "snippet"
        if self.lang == "bash" and "run" in self.directives:
            return "setup"
        return None

    @property
    def skip_reason(self) -> str | None:
        for directive in self.directives:
            if directive.startswith("skip"):
                reason = directive[len("skip"):].strip()
                return reason[1:-1] if reason.startswith("(") and reason.endswith(")") else reason
        return None

    @property
    def exit_codes(self) -> list[int] | None:
        for directive in self.directives:
            if directive.startswith("exit "):
                return [int(code) for code in directive.split()[1:]]
        return None

    @property
    def save_as(self) -> str | None:
        return next((d.split(None, 1)[1] for d in self.directives if d.startswith("save ")), None)

    def commands(self) -> list[tuple[str, str]]:
        """(command, pasted output) of a transcript, in order."""
        pairs: list[tuple[str, list[str]]] = []
        for line in self.body.splitlines():
            if line.startswith("$ "):
                pairs.append((line[2:], []))
            elif pairs:
                pairs[-1][1].append(line)
        return [(command, "\n".join(out)) for command, out in pairs]


def blocks(root: Path, page: Path) -> list[Block]:
    """Every fenced block of ``page`` with the directives right before it."""
    found: list[Block] = []
    pending: list[str] = []
    lines = page.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        directive = DIRECTIVE.match(lines[i].strip())
        if directive:
            pending.append(directive.group(1))
        elif fence:
            indent = len(fence.group(1))
            end = next(j for j in range(i + 1, len(lines)) if lines[j].lstrip().startswith("```"))
            body = "\n".join(line[indent:] for line in lines[i + 1:end])
            found.append(Block(page.relative_to(root).as_posix(), i + 1, fence.group(2), body,
                               pending))
            pending, i = [], end
        elif lines[i].strip():
            pending = []  # a directive belongs to the block right after it
        i += 1
    return found


def normalise(text: str, tmp: str) -> list[str]:
    text = text.replace(tmp + os.sep, "").replace(tmp, ".")
    lines = [line.rsplit("\r", 1)[-1].rstrip() for line in text.split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def matches(printed: list[str], pasted: list[str]) -> bool:
    """Line for line, a pasted ``...`` line standing for any number of printed lines."""
    if not pasted:
        return not printed
    if pasted[0] == ELLIPSIS:
        return any(matches(printed[k:], pasted[1:]) for k in range(len(printed) + 1))
    return bool(printed) and printed[0] == pasted[0] and matches(printed[1:], pasted[1:])


def run_command(command: str, cwd: Path) -> tuple[int, str]:
    """(exit code, stdout and stderr as one text, as a terminal shows them).

    ``upgd-migrate`` runs in this process (``cli.main``; a fresh interpreter spends seconds
    importing torch), everything else in ``bash`` with this interpreter's folder first on PATH.
    """
    argv = shlex.split(command)
    if argv and argv[0] == "upgd-migrate" and not set("|&;<>") & set(command):
        from upgd_migrate.cli import main

        buf = io.StringIO()
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            code = main(argv[1:])
        return code, buf.getvalue()
    env = {**os.environ, "NO_COLOR": "1", "PYTHONUNBUFFERED": "1",
           "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
    done = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=300)
    return done.returncode, done.stdout


def run_snippet(block: Block, namespace: dict) -> None:
    exec(compile(block.body, block.name, "exec"), namespace)  # noqa: S102 - our own docs
