"""``upgd-migrate lint PATH...``: report legacy UPGD/VGS config problems; never writes."""
from __future__ import annotations

import sys

import click

from upgd_migrate.findings import Severity
from upgd_migrate.legacy import ABSOLUTE_SIGMA_MAX, RELATIVE_SIGMA_RANGE, UPGD_TYPES, VGS_VERSIONS
from upgd_migrate.config.lint import default_jobs, lint_paths
from upgd_migrate.report import REPORTERS, report_json
from upgd_migrate.config.rules import RULES, LintOptions


def _relative_range(ctx, param, value: str | None) -> tuple[float, float]:
    if value is None:
        return RELATIVE_SIGMA_RANGE
    try:
        low, high = (float(part) for part in value.split(":"))
    except ValueError:
        raise click.BadParameter(f"expected MIN:MAX, e.g. 0.01:0.5, got {value!r}") from None
    if not 0 <= low < high:
        raise click.BadParameter(f"need 0 <= MIN < MAX, got {value!r}")
    return low, high


def _absolute_max(ctx, param, values: tuple[str, ...]) -> dict[str, float]:
    limits = dict(ABSOLUTE_SIGMA_MAX)
    for value in values:
        name, _, limit = value.partition("=")
        if name not in UPGD_TYPES:
            raise click.BadParameter(f"{name!r} is not one of {', '.join(UPGD_TYPES)}")
        try:
            limits[name] = float(limit)
        except ValueError:
            raise click.BadParameter(f"expected OPTIMIZER=MAX, got {value!r}") from None
    return limits


def list_rules() -> str:
    """One line per rule: code, severity, name, summary (the README table mirrors it)."""
    return "\n".join(f"{r.code}  {r.severity.value:<7}  {r.name:<27}  {r.summary}"
                     + (f" (fix: {r.fix})" if r.fix else "") for r in RULES.values())


def exit_code(severities: set[Severity], strict: bool, exit_zero: bool) -> int:
    if exit_zero:
        return 0
    failing = {Severity.ERROR, Severity.WARNING} if strict else {Severity.ERROR}
    return 1 if severities & failing else 0


@click.command("lint")
@click.argument("paths", nargs=-1, type=click.Path(exists=True))
@click.option("--format", "fmt", type=click.Choice(list(REPORTERS)), default="text",
              show_default=True, help="Output format.")
@click.option("--strict", is_flag=True, help="Warnings fail the run too (exit 1).")
@click.option("--exit-zero", is_flag=True, help="Exit 0 even with findings (wins over --strict).")
@click.option("--list-rules", "show_rules", is_flag=True, help="Print every rule and exit.")
@click.option("--relative-sigma", metavar="MIN:MAX", callback=_relative_range,
              help=f"Plausible relative sigma range (default "
                   f"{RELATIVE_SIGMA_RANGE[0]:g}:{RELATIVE_SIGMA_RANGE[1]:g}).")
@click.option("--absolute-sigma-max", metavar="OPTIMIZER=MAX", multiple=True,
              callback=_absolute_max,
              help="Largest plausible absolute sigma for an optimizer (default 0.01 each); "
                   "repeatable.")
@click.option("-j", "--jobs", type=click.IntRange(min=0), default=0, show_default=True,
              help="Worker processes for many files; 0: one per CPU.")
@click.option("--vgs-version", type=click.Choice(VGS_VERSIONS), default=VGS_VERSIONS[-1],
              show_default=True, help="VGS version the configs run with.")
def lint_command(paths: tuple[str, ...], fmt: str, strict: bool, exit_zero: bool,
                 show_rules: bool, relative_sigma: tuple[float, float],
                 absolute_sigma_max: dict[str, float], jobs: int, vgs_version: str) -> int:
    """Lint UPGD/VGS configs: files, and *.yaml/*.yml under directories.

    \b
    Examples:
      upgd-migrate lint configs/
      upgd-migrate lint --strict --format github configs/train.yaml
      upgd-migrate lint --format json configs/ > findings.json

    \b
    Exit codes: 0 clean (or only warnings/info), 1 errors (or warnings with --strict),
    2 usage error. Silence one finding with `# upgd-migrate: disable=CODE` on its line.
    """
    if show_rules:
        click.echo(list_rules())
        return 0
    options = LintOptions(relative_sigma, absolute_sigma_max, vgs_version)
    result = lint_paths(paths, options, jobs or default_jobs())
    code = exit_code({f.severity for f in result.findings}, strict, exit_zero)
    if fmt == "json":  # the shared envelope carries the exit code
        report_json(result.findings, result.files, sys.stdout, exit_code=code)
    else:
        REPORTERS[fmt](result.findings, result.files, sys.stdout)
    return code
