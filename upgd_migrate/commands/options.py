"""Options and checks shared by several commands: one rule, one message, everywhere.

``sigma_ratio_option`` validates ``--sigma-ratio`` for ``config`` and ``checkpoint`` alike (the
one check in ``legacy.relative_sigma_excess``), ``need_torch`` turns a missing torch into one line and exit 2.
"""
from __future__ import annotations

import math
import warnings

import click

from upgd_migrate.errors import UpgdMigrateError
from upgd_migrate.legacy import ratio_caution, relative_sigma_excess

TORCH_HINT = "pip install 'upgd-migrate[torch]'"


def sigma_ratio_callback(ctx: click.Context | None, param: click.Parameter | None,
                         value: float | None) -> float | None:
    """``--sigma-ratio R``: a relative noise-to-update ratio, 0 < R <= 1.

    Above 1 the noise would outweigh the update: almost always a percentage typed as a number
    (5 for 5%), so it is a usage error that suggests R/100. Outside the plausible range
    (``legacy.RELATIVE_SIGMA_RANGE``) but at most 1 it is allowed, with a warning on stderr.
    """
    if value is None:
        return None
    if not (math.isfinite(value) and value > 0):
        raise click.BadParameter(f"must be a positive number, got {value:g}")
    excess = relative_sigma_excess(value)
    if excess is not None and excess[0] == "error":
        raise click.BadParameter(f"{value:g} is {excess[1]}")
    if (why := ratio_caution(value)) is not None:
        click.echo(f"warning: --sigma-ratio {value:g} is {why}", err=True)
    return value


def sigma_ratio_option(help: str):
    """The ``--sigma-ratio`` option itself, validated by :func:`sigma_ratio_callback`."""
    return click.option("--sigma-ratio", type=float, metavar="R",
                        callback=sigma_ratio_callback, help=help)


def need_torch(command: str) -> None:
    """Import torch now, or stop with one line and exit 2 (lint/config never need it).

    torch warns "Failed to initialize NumPy" on import when numpy is missing; nothing here
    uses numpy, so the warning is noise ahead of every message.
    """
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*Failed to initialize NumPy")
            import torch  # noqa: F401
    except ImportError:
        raise UpgdMigrateError(f"{command} needs torch: {TORCH_HINT}") from None
