"""``upgd-migrate config PATH...``: migrate YAML configs to adaptive noise, nothing else."""
from __future__ import annotations

import os
import sys

import click

from upgd_migrate.commands.options import sigma_ratio_option
from upgd_migrate.errors import resume_interrupts
from upgd_migrate.legacy import DEFAULT_SIGMA_RATIO, MIGRATIONS, relative_sigma_excess
from upgd_migrate.config.lint import iter_files
from upgd_migrate.config.migrate import FileJob, Mode, migrate_file
from upgd_migrate.config.migrations import SigmaPolicy


def list_migrations() -> str:
    """One line per migration, in the order they run: id, lint codes it fixes, what it does."""
    return "\n".join(f"{m.id:<20}  {','.join(m.fixes):<13}  {m.summary}" for m in MIGRATIONS)


def _suffix(ctx, param, value: str | None) -> str | None:
    if value is not None and (not value or os.sep in value or "/" in value):
        raise click.BadParameter(f"must be a non-empty file-name suffix like .bak, got {value!r}")
    return value


def policy_for(sigma_ratio: float | None, calibrate_from: str | None,
               storage_options: tuple[str, ...] = ()) -> SigmaPolicy:
    """--sigma-ratio, else --calibrate-from (torch imported only here; a URL is fetched into a
    private temp folder first), else the default."""
    if sigma_ratio is not None:
        return SigmaPolicy(sigma_ratio, "--sigma-ratio")
    if calibrate_from is not None:
        from upgd_migrate import storage
        from upgd_migrate.config.calibration import calibrated_policy

        if not storage.is_url(calibrate_from):
            return calibrated_policy(calibrate_from)
        try:  # a URL is read by range: the optimizer state's tensors, never the weights
            from upgd_migrate.checkpoint.io import sparse_reads
        except ImportError:  # no torch: calibrated_policy says so in one line
            return calibrated_policy(calibrate_from)
        with storage.staged([calibrate_from], storage.parse_options(storage_options),
                            lazy=True) as (local, _), sparse_reads("states"):
            return calibrated_policy(str(local[0]))
    return SigmaPolicy(DEFAULT_SIGMA_RATIO, "the seed's default ratio")


def _local_or_url(ctx, param, value: str | None) -> str | None:
    """An existing path, or a URL (checked when it is fetched)."""
    from upgd_migrate.storage import is_url

    if value is None or is_url(value):
        return value
    return click.Path(exists=True).convert(value, param, ctx)


@click.command("config")
@click.argument("paths", nargs=-1, type=click.Path(exists=True))
@sigma_ratio_option(f"Relative sigma to write (default {DEFAULT_SIGMA_RATIO:g}, the seed's ratio; "
                   "above 1 is refused: a ratio, not a percentage).")
@click.option("--calibrate-from", callback=_local_or_url,
              metavar="CHECKPOINT", help="Calibrate the relative sigma so the noise level of "
              "this optimizer checkpoint (a file or a DCP folder, or its URL: s3://...; param "
              "group 0, last step) is kept. Needs torch.")
@click.option("--storage-option", "storage_options", multiple=True, metavar="KEY=VALUE",
              help="For a --calibrate-from URL: a file system option (e.g. "
                   "endpoint_url=http://127.0.0.1:9000). Repeatable.")
@click.option("--check", is_flag=True, help="Write nothing; exit 1 if a file needs changes.")
@click.option("--diff", is_flag=True, help="Write nothing; print a unified diff on stdout.")
@click.option("--backup", metavar="SUFFIX", callback=_suffix,
              help="Keep the original as FILE+SUFFIX (never overwrites an existing backup).")
@click.option("--unsafe-fixes", is_flag=True,
              help="Also run the fixes that may change what your own code reads (commenting "
                   "out VGS keys no VGS reads, such as accumulation_steps).")
@click.option("--list-migrations", "show_migrations", is_flag=True,
              help="Print every migration, in the order they run, and exit.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="Output format (json: one document on stdout).")
def config(paths: tuple[str, ...], sigma_ratio: float | None, calibrate_from: str | None,
           storage_options: tuple[str, ...], check: bool, diff: bool, backup: str | None, unsafe_fixes: bool,
           show_migrations: bool, fmt: str) -> int:
    """Migrate UPGD/VGS configs to adaptive noise: files, and *.yaml/*.yml under folders.

    Sets adaptive_noise: true and converts an absolute sigma to a relative ratio
    (the old value stays on the line in a `# upgd-migrate:` comment), plus every
    other fix listed by --list-migrations (those marked --unsafe-fixes only with
    it). Only the changed values differ.

    \b
    Examples:
      upgd-migrate config --diff configs/       what would change, as a unified diff
      upgd-migrate config --backup .orig configs/train.yaml
      upgd-migrate config --check --format json configs/

    \b
    Exit codes: 0 nothing to change, 1 files changed (or would, with --check/--diff),
    2 usage error or a file that could not be read, parsed, written or backed up.
    Interrupted (Ctrl-C / SIGTERM): 130 / 143, no temp file or unused backup left.
    """
    if show_migrations:
        click.echo(list_migrations())
        return 0
    if sigma_ratio is not None and calibrate_from is not None:
        raise click.UsageError("--sigma-ratio and --calibrate-from are alternatives; pass one")
    if backup is not None and (check or diff):
        raise click.UsageError("--backup applies only when writing (not with --check or --diff)")
    policy = policy_for(sigma_ratio, calibrate_from, storage_options)
    # A calibrated ratio below the plausible range is the usual case (measured, marked, trusted
    # by lint); one above it means a tiny saved direction, worth a word.
    if calibrate_from and (excess := relative_sigma_excess(policy.ratio)) is not None:
        click.echo(f"warning: relative sigma {policy.ratio:g} ({policy.source}) is {excess[1]}",
                   err=True)
    mode = Mode.DIFF if diff else Mode.CHECK if check else Mode.WRITE
    if fmt == "json":
        return _run_json(paths, policy, mode, backup, unsafe_fixes)
    job = FileJob(policy, mode, sys.stdout, sys.stderr, backup, unsafe_fixes)
    for path in iter_files(paths):
        resume_interrupts()  # a signal since the last file's write interrupts here
        migrate_file(path, job)
    summary = job.report.summary()
    if summary:
        click.echo(summary, err=True)
    return job.report.exit_code


_COUNTERS = {"changed": "changed", "already": "already migrated",
             "unrelated": "without UPGD settings", "manual": "needs a manual fix",
             "failed": "error"}


def _run_json(paths: tuple[str, ...], policy: SigmaPolicy, mode: Mode,
              backup: str | None, unsafe_fixes: bool) -> int:
    """``--format json``: each file's outcome (read from the report's counters) and lines."""
    import io
    import json

    from upgd_migrate.report import envelope

    files = []
    job = FileJob(policy, mode, io.StringIO(), io.StringIO(), backup, unsafe_fixes)
    for path in iter_files(paths):
        resume_interrupts()
        before = {k: getattr(job.report, k) for k in _COUNTERS}
        job.out, job.err = io.StringIO(), io.StringIO()
        migrate_file(path, job)
        status = next((v for k, v in _COUNTERS.items() if getattr(job.report, k) != before[k]),
                      "unknown")
        if status == "changed":
            status = "rewritten" if mode is Mode.WRITE else "would be rewritten"
        entry = {"path": path, "status": status, "messages": job.err.getvalue().splitlines()}
        if mode is Mode.DIFF:
            entry["diff"] = job.out.getvalue()
        files.append(entry)
    summary = {k: getattr(job.report, k) for k in _COUNTERS}
    doc = envelope("config", {"mode": mode.value, "files": files, "summary": summary},
                   job.report.exit_code)
    click.echo(json.dumps(doc, indent=2))
    return job.report.exit_code
