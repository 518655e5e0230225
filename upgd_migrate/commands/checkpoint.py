"""``upgd-migrate checkpoint``: migrate saved optimizer/VGS states; ``checkpoint inspect``.

``upgd-migrate checkpoint PATH...`` is short for ``upgd-migrate checkpoint migrate PATH...``.
Torch is imported inside the callbacks, so ``upgd-migrate --help`` stays instant.
"""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import click

from upgd_migrate.commands.options import need_torch, sigma_ratio_option

# jsonl: one JSON object per file as it finishes, then the envelope with the summary
FORMATS = click.Choice(["text", "json", "jsonl"])


class DefaultToMigrate(click.Group):
    """A group whose first argument, when it is not a subcommand, starts ``migrate``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = ["migrate", *args]
        return super().parse_args(ctx, args)

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # `checkpoint PATH -o OUT` is the common call: its options belong on this page.
        migrate = self.commands["migrate"]
        sub = click.Context(migrate, info_name="migrate", parent=ctx)
        records = [r for p in migrate.get_params(sub)
                   if isinstance(p, click.Option) and (r := p.get_help_record(sub))]
        with formatter.section("Options (of migrate, the default subcommand)"):
            formatter.write_dl(records)
        self.format_commands(ctx, formatter)


def allow_global_option(fn):
    return click.option("--allow-global", "allow_globals", multiple=True, metavar="MODULE.NAME",
                        help="Admit this global when unpickling (only for files you trust). "
                             "Repeatable. numpy's data-only globals (arrays, dtypes) are "
                             "admitted without it.")(fn)


def jobs_option(fn):
    return click.option("-j", "--jobs", type=click.IntRange(min=0), default=0,
                        show_default=True, help="Worker processes for many files; 0: one per "
                                                "CPU.")(fn)


class PathOrURL(click.ParamType):
    """A local path (a ``Path``), or an fsspec URL kept as the string it is (``s3://b/run``)."""

    name = "path"

    def convert(self, value, param, ctx):
        from upgd_migrate.storage import is_url

        return value if isinstance(value, str) and is_url(value) else Path(value)


def paths_argument(fn):
    return click.argument("paths", nargs=-1, required=True, type=PathOrURL())(fn)


def storage_option(fn):
    return click.option("--storage-option", "storage_options", multiple=True,
                        metavar="KEY=VALUE",
                        help="For URLs (s3://, gs://, hf://, memory://): a file system option, "
                             "e.g. endpoint_url=http://127.0.0.1:9000 (a JSON scalar when it "
                             "parses as one). Repeatable.")(fn)


def staged_paths(paths, storage_options, lazy: bool = False):
    """The commands' view of PATHS: URLs fetched into a private temp folder (see storage);
    ``lazy``: DCP folders and torch zips sparsely, read by range (a command that reads only)."""
    from upgd_migrate.storage import parse_options, shown_as_urls, staged

    stack = contextlib.ExitStack()
    local, names = stack.enter_context(staged(paths, parse_options(storage_options), lazy))
    stack.enter_context(shown_as_urls(names))
    return stack, local


@click.group(cls=DefaultToMigrate, context_settings={"help_option_names": ["-h", "--help"]})
def checkpoint() -> None:
    """Migrate optimizer and VGS states inside checkpoints to the adaptive-noise format.

    \b
    upgd-migrate checkpoint [migrate] PATH... (-o OUT | --in-place | --check | --diff)
    upgd-migrate checkpoint inspect PATH...

    \b
    Examples:
      upgd-migrate checkpoint run/ -o migrated/        every input gets a counterpart
      upgd-migrate checkpoint ckpt.pt --in-place --backup .orig
      upgd-migrate checkpoint run/ --check             exit 1 if any file would change

    \b
    A folder is a run: every file in it is decided by content. Files that hold no
    optimizer or VGS state (RNG states, schedulers, weights, JSON, pickles) are
    carried; a torch file that could hold one but is refused is "not checked".

    \b
    Exit codes: 0 nothing to change, 1 files changed (or would, with --check/--diff),
    2 usage error, unreadable or not-checked input, or no UPGD/VGS state at all.
    Interrupted (Ctrl-C / SIGTERM): 130 / 143, nothing half-written left behind.
    """


def _validate(paths, output, in_place, backup, check, dry_run) -> None:
    if check and dry_run:
        raise click.UsageError("--check and --diff/--dry-run cannot be combined")
    reporting = check or dry_run
    if reporting and (output or in_place):
        raise click.UsageError("--check/--diff write nothing: drop -o/--in-place")
    if not reporting and bool(output) == bool(in_place):
        raise click.UsageError("say where to write: -o OUT or --in-place "
                               "(or --check / --diff to only report)")
    if backup and not in_place:
        raise click.UsageError("--backup needs --in-place")
    # A DCP folder (it holds .metadata) is one checkpoint, not a folder of them.
    many = len(paths) > 1 or any(Path(p).is_dir() and not (Path(p) / ".metadata").is_file()
                                 for p in paths)
    if output and many and Path(output).is_file():
        raise click.UsageError(f"-o {output}: several inputs need a folder, not a file")


@checkpoint.command("migrate")
@paths_argument
@click.option("-o", "--output", type=PathOrURL(),
              help="Write here (a folder when several inputs are given): every file of an "
                   "input folder at its relative path, migrated or copied. Inputs that would "
                   "land on the same path are refused before anything is written (give their "
                   "common folder instead); OUT inside an input folder is refused.")
@click.option("--link", is_flag=True, help="With -o: hard-link unchanged files instead of "
              "copying them. Only if nothing rewrites OUT: a trainer that saves into a linked "
              "file in place writes through to the input.")
@click.option("--in-place", is_flag=True, help="Rewrite the input files atomically.")
@click.option("--backup", metavar="SUFFIX", help="With --in-place: keep the original as "
              "FILE+SUFFIX (an existing backup is never overwritten).")
@click.option("--check", is_flag=True, help="Write nothing; exit 1 if a file needs changes.")
@click.option("--diff", "--dry-run", "dry_run", is_flag=True,
              help="Write nothing; print what would change, state by state (exit 1 if any).")
@sigma_ratio_option("Relative sigma (0 < R <= 1; 0.05 = 5%) to use instead of calibrating "
                    "from each checkpoint's own moments.")
@click.option("--instant-noise", is_flag=True, help="Move groups on the EMA noise path "
              "(instant_noise_scale: false) to the instant path, which holds the ratio under "
              "gradient scaling.")
@click.option("--verify", "run_verify", is_flag=True,
              help="Also run verify on the migrated states.")
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True)
@jobs_option
@storage_option
@allow_global_option
def migrate(paths, output, link, in_place, backup, check, dry_run, sigma_ratio, instant_noise,
            run_verify, fmt, jobs, storage_options, allow_globals) -> int:
    """Migrate every optimizer and VGS state found in PATHS (files or folders).

    \b
    Examples:
      upgd-migrate checkpoint migrate run/ -o migrated/
      upgd-migrate checkpoint migrate ckpt.pt --in-place --backup .orig --verify
      upgd-migrate checkpoint migrate ppo.zip --diff --sigma-ratio 0.05
    """
    _validate(paths, output, in_place, backup, check, dry_run)
    if link and not output:
        raise click.UsageError("--link needs -o OUT")
    need_torch("upgd-migrate checkpoint")
    from upgd_migrate.checkpoint import run as _checkpoint_run
    from upgd_migrate.checkpoint.steps import Context

    def run(paths, output) -> int:
        return _checkpoint_run.run_migrate(paths, output, in_place, backup, check, dry_run,
                                           Context(sigma_ratio, instant_noise=instant_noise),
                                           run_verify, fmt, allow_globals, link, jobs)

    from upgd_migrate.storage import is_url

    if not (any(is_url(p) for p in paths) or is_url(output)):
        return run(paths, output)
    from upgd_migrate.storage import migrate_urls, parse_options

    return migrate_urls(run, paths, output, in_place and backup,
                        parse_options(storage_options), lazy=True)


@checkpoint.command("inspect")
@paths_argument
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True)
@jobs_option
@storage_option
@allow_global_option
def inspect(paths, fmt, jobs, storage_options, allow_globals) -> int:
    """Show the container, optimizer class and generation of every state in PATHS.

    \b
    Examples:
      upgd-migrate checkpoint inspect ckpt.pt
      upgd-migrate checkpoint inspect run/ --format json
    Exit codes: 0 read, 2 unreadable input, no checkpoint found, or no UPGD/VGS state in
    any of them (a torch.optim.Adam state alone, say).
    """
    need_torch("upgd-migrate checkpoint inspect")
    from upgd_migrate.checkpoint import run as _checkpoint_run

    stack, local = staged_paths(paths, storage_options, lazy=True)
    with stack:
        return _checkpoint_run.run_inspect(local, fmt, allow_globals, jobs)


def echo_err(line: str) -> None:
    click.echo(line, file=sys.stderr)
