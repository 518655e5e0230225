"""Click commands, one module each, registered by name in ``upgd_migrate.cli.COMMANDS``.

Thin wiring: options in, a ``run_*`` function of a package called, an exit code out. They import
the packages lazily, inside the command, so ``lint`` never pays for torch.
"""
