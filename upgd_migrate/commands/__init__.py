"""Click commands, one module per command, registered by name in :data:`upgd_migrate.cli.COMMANDS`."""
