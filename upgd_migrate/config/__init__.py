"""Training configs: read and edit YAML, find the optimizer/VGS blocks, lint, migrate; and
(:mod:`.plain`) run the same rules over a plain dict for :mod:`upgd_migrate.schema`.

May import the shared core (errors, findings, fileio, report, legacy); never torch or pydantic at
import time (a pre-commit hook must start fast). Only :mod:`.yaml_io` imports ruamel.
"""
