"""``upgd-migrate checkpoint``: migrate saved optimizer/VGS states; ``checkpoint inspect``.

``upgd-migrate checkpoint PATH...`` is short for ``upgd-migrate checkpoint migrate PATH...``.
Torch is imported inside the callbacks, so ``upgd-migrate --help`` stays instant.
"""
from __future__ import annotations

import sys
from pathlib import Path

import click

FORMATS = click.Choice(["text", "json"])


class DefaultToMigrate(click.Group):
    """A group whose first argument, when it is not a subcommand, starts ``migrate``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = ["migrate", *args]
        return super().parse_args(ctx, args)


def allow_global_option(fn):
    return click.option("--allow-global", "allow_globals", multiple=True, metavar="MODULE.NAME",
                        help="Admit this global when unpickling (only for files you trust). "
                             "Repeatable.")(fn)


def paths_argument(fn):
    return click.argument("paths", nargs=-1, required=True,
                          type=click.Path(path_type=Path))(fn)


@click.group(cls=DefaultToMigrate, context_settings={"help_option_names": ["-h", "--help"]})
def checkpoint() -> None:
    """Migrate optimizer and VGS states inside checkpoints to the adaptive-noise format.

    \b
    upgd-migrate checkpoint [migrate] PATH... (-o OUT | --in-place | --check | --dry-run)
    upgd-migrate checkpoint inspect PATH...
    """


def _validate(paths, output, in_place, backup, check, dry_run, sigma_ratio) -> None:
    if check and dry_run:
        raise click.UsageError("--check and --dry-run cannot be combined")
    reporting = check or dry_run
    if reporting and (output or in_place):
        raise click.UsageError("--check/--dry-run write nothing: drop -o/--in-place")
    if not reporting and bool(output) == bool(in_place):
        raise click.UsageError("say where to write: -o OUT or --in-place "
                               "(or --check / --dry-run to only report)")
    if backup and not in_place:
        raise click.UsageError("--backup needs --in-place")
    # A DCP folder (it holds .metadata) is one checkpoint, not a folder of them.
    many = len(paths) > 1 or any(Path(p).is_dir() and not (Path(p) / ".metadata").is_file()
                                 for p in paths)
    if output and many and Path(output).is_file():
        raise click.UsageError(f"-o {output}: several inputs need a folder, not a file")
    if sigma_ratio is not None and not 0.0 <= sigma_ratio < float("inf"):
        raise click.UsageError(f"--sigma-ratio {sigma_ratio}: must be a finite ratio >= 0")


@checkpoint.command("migrate")
@paths_argument
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="Write here (a folder when several inputs are given).")
@click.option("--in-place", is_flag=True, help="Rewrite the input files atomically.")
@click.option("--backup", metavar="SUFFIX", help="With --in-place: keep the original as "
              "FILE+SUFFIX (an existing backup is never overwritten).")
@click.option("--check", is_flag=True, help="Only say which files would change (exit 1 if any).")
@click.option("--dry-run", is_flag=True, help="Say in detail what would change; write nothing.")
@click.option("--sigma-ratio", type=float, help="Relative sigma to use instead of calibrating "
              "from each checkpoint's own moments.")
@click.option("--instant-noise", is_flag=True, help="Move groups on the EMA noise path "
              "(instant_noise_scale: false) to the instant path, which holds the ratio under "
              "gradient scaling.")
@click.option("--verify", "run_verify", is_flag=True,
              help="Also run verify on the migrated states.")
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True)
@allow_global_option
def migrate(paths, output, in_place, backup, check, dry_run, sigma_ratio, instant_noise,
            run_verify, fmt, allow_globals) -> int:
    """Migrate every optimizer and VGS state found in PATHS (files or folders)."""
    _validate(paths, output, in_place, backup, check, dry_run, sigma_ratio)
    from upgd_migrate.checkpoint import run as _checkpoint_run
    from upgd_migrate.checkpoint.migrate import Context

    return _checkpoint_run.run_migrate(paths, output, in_place, backup, check, dry_run,
                                       Context(sigma_ratio, instant_noise=instant_noise),
                                       run_verify, fmt, allow_globals)


@checkpoint.command("inspect")
@paths_argument
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True)
@allow_global_option
def inspect(paths, fmt, allow_globals) -> int:
    """Show the container, optimizer class and generation of every state in PATHS."""
    from upgd_migrate.checkpoint import run as _checkpoint_run

    return _checkpoint_run.run_inspect(paths, fmt, allow_globals)


def echo_err(line: str) -> None:
    click.echo(line, file=sys.stderr)
