"""``upgd-migrate verify``: run every optimizer state in a checkpoint and check its noise."""
from __future__ import annotations

from pathlib import Path

import click

from upgd_migrate.commands.checkpoint import (FORMATS, allow_global_option, jobs_option,
                                              paths_argument, staged_paths, storage_option)
from upgd_migrate.commands.options import need_torch


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@paths_argument
@click.option("--config", "config", type=click.Path(path_type=Path, dir_okay=False),
              help="Training config: its VGS settings drive the VGS run when the checkpoint "
                   "holds no VGS state, and its noise settings are compared with the states'.")
@click.option("--steps", type=click.IntRange(1, 10_000), default=32, show_default=True,
              help="Optimizer steps per scenario.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--sample", type=click.IntRange(min=0), default=4096, show_default=True,
              metavar="N", help="Drive at most N elements of each tensor (a uniform sample, "
                                "weighted by the tensor's size); 0: every element.")
@jobs_option
@storage_option
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True)
@click.option("--plot", type=click.Path(path_type=Path, dir_okay=False), metavar="FILE",
              help="Also draw, per state, the ratio and the noise level of each step into "
                   "FILE (.png or .svg; needs the 'plot' extra: matplotlib).")
@click.option("--device", default="cpu", show_default=True, metavar="DEVICE",
              help="Where the proxy parameters and the optimizers run: cpu, cuda or cuda:N "
                   "(the noise is then drawn on that device).")
@allow_global_option
def verify(paths, config, steps, seed, sample, jobs, storage_options, fmt, allow_globals,
           plot, device) -> int:
    """Load every optimizer state in PATHS into the packaged optimizer and check its noise.

    \b
    Per state: noise-to-update ratio vs target (sigma, when adaptive), amplification
    r(c)/r(1) for c = 0.5, 0.1 and the packaged VGS (must be 1.00 +/- 0.03), first-step
    noise level vs the pre-migration level (a spike or drop beyond 1.5x fails), and
    finiteness. A torch.optim state (Adam, say) is skipped, not verified.

    \b
    Examples:
      upgd-migrate verify migrated/ --format json
      upgd-migrate verify ckpt.pt --config train.yaml --steps 64
      upgd-migrate verify s3://bucket/pbt/ --jobs 4 --format jsonl

    \b
    Exit codes: 0 all pass; 1 a check failed; 2 a file could not be read, or no UPGD/VGS
    state was found to verify. Interrupted: 130 (Ctrl-C) / 143 (SIGTERM).
    """
    need_torch("upgd-migrate verify")
    from upgd_migrate.verify.run import run_verify

    from upgd_migrate.checkpoint import io

    # verify reads the states, never the model weights: a torch zip in a bucket is fetched by
    # range, its states' tensors only (checkpoint.zipslice)
    stack, local = staged_paths(paths, storage_options, lazy=True)
    with stack, io.sparse_reads("states"):
        return run_verify(local, config, steps, seed, fmt, allow_globals, plot, sample, jobs,
                          device)
