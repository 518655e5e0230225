"""Command-line entry point. Thin: options -> run_*() -> exit code.

Subcommands are imported lazily by name, so `upgd-migrate lint` never pays for (or needs)
torch, and `--help` stays instant. Add a command by adding one line to ``COMMANDS``.
"""
from __future__ import annotations

import importlib
import json
import sys
from typing import Sequence

import click

from upgd_migrate import __version__
from upgd_migrate.errors import (Interrupted, UpgdMigrateError, interrupted_by, late_signal,
                                 signals_interrupt)

# name -> "module:attribute" of a click.Command
COMMANDS: dict[str, str] = {
    "config": "upgd_migrate.commands.config:config",
    "lint": "upgd_migrate.commands.lint:lint_command",
    "schema": "upgd_migrate.commands.schema:schema_command",
    "checkpoint": "upgd_migrate.commands.checkpoint:checkpoint",
    "verify": "upgd_migrate.commands.verify:verify",
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported only when used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in COMMANDS:
            module_name, attr = COMMANDS[name].split(":")
            return getattr(importlib.import_module(module_name), attr)
        return super().get_command(ctx, name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="upgd-migrate")
def cli() -> None:
    """Lint and migrate UPGD / VGS configs and checkpoints to adaptive noise.

    With adaptive_noise on, sigma is a relative noise-to-update ratio (0.05 = 5%);
    with it off, sigma is an absolute noise std. Configs and checkpoints written
    before the change mix the two up; this tool finds and fixes that.

    \b
    A typical session:
      upgd-migrate lint configs/              what is wrong, with line:col
      upgd-migrate config --diff configs/     what the fix would change
      upgd-migrate config configs/            fix it (only the changed values move)
      upgd-migrate checkpoint inspect run/    what the checkpoints hold
      upgd-migrate checkpoint run/ -o new/    migrate them (weights-only loading)
      upgd-migrate verify new/                run the optimizer on them and check

    \b
    Exit codes: 0 clean, 1 findings or files changed, 2 usage or unreadable input
    (lint reports an unreadable file as a finding instead).
    """


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code instead of exiting (testable, embeddable).

    Without ``argv`` it runs this process's command line: SIGINT and SIGTERM are then ignored
    after it returns, so the exit status is the run's, not a signal that came during shutdown.
    """
    try:
        with signals_interrupt(until_exit=argv is None):
            code = _main(argv)
            if (signum := late_signal()) is not None:  # the results were written: they stand
                click.echo(f"{_name(signum)} arrived after the results were written: "
                           "not interrupted", err=True)
            return code
    except Interrupted as e:
        return _interrupted(e.signum)
    except BaseException:
        # torch's C++ writer turns a signal raised inside its write callback into a
        # RuntimeError ("enforce fail at inline_container.cc"): the signal is what happened.
        signum = interrupted_by()
        if signum is None:
            raise
        return _interrupted(signum)


def _name(signum: int) -> str:
    return "SIGINT" if signum == 2 else "SIGTERM" if signum == 15 else f"signal {signum}"


def _interrupted(signum: int) -> int:
    click.echo(f"interrupted ({_name(signum)}): no temp file, partial output or unused backup "
               "left", err=True)
    return 128 + signum


def _main(argv: Sequence[str] | None) -> int:
    try:
        rv = cli.main(args=list(argv) if argv is not None else None, prog_name="upgd-migrate",
                      standalone_mode=False)
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.ClickException as e:
        e.show()
        return _json_error(argv, e.format_message(), e.exit_code)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return 130
    except UpgdMigrateError as e:
        click.echo(f"error: {e}", err=True)
        return _json_error(argv, str(e), e.exit_code)
    # Commands return their exit code (see the contract in the group's help).
    return rv if isinstance(rv, int) else 0


def json_command(args: Sequence[str]) -> str | None:
    """The envelope's ``command`` when ``args`` ask a command for ``--format json``, else None.

    Read from the words themselves: a usage error can stop click before it parses --format.
    """
    args = list(args)
    if not any(a == "--format=json" or (a == "--format" and b == "json")
               for a, b in zip(args, args[1:] + [""])):
        return None
    words = [a for a in args if not a.startswith("-")]
    if not words or words[0] not in COMMANDS:
        return None
    rest = args[args.index(words[0]) + 1:]
    if words[0] == "checkpoint" and rest[:1] == ["inspect"]:
        return "checkpoint inspect"
    return words[0]


def _json_error(argv: Sequence[str] | None, message: str, code: int) -> int:
    """A JSON caller reads stdout: the error comes there too, in the envelope every
    ``--format json`` prints (the plain line stays on stderr, for the person at the terminal)."""
    command = json_command(sys.argv[1:] if argv is None else argv)
    if command is not None:
        from upgd_migrate.report import envelope

        body = {"error": message, "summary": {"files": 0, "errors": 1}}
        click.echo(json.dumps(envelope(command, body, code), indent=2))
    return code
