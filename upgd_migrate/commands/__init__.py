"""Click commands, one module each, registered by name in ``upgd_migrate.cli.COMMANDS``."""
