"""Migration steps: the registry (:mod:`.registry`) and the steps that register in it.

Importing this package imports the registry, then the optimizer steps, then the VGS steps,
once: that is the registry's order. May import ``optim``, the checkpoint core (``detect``) and
the shared core; torch required.
"""
from __future__ import annotations

from upgd_migrate.checkpoint.steps import optim, vgs  # noqa: F401  (they register themselves)
from upgd_migrate.checkpoint.steps.registry import (REGISTRY, Context, Migration, Note, Outcome,
                                                    Result, migrate_optimizer, migrate_vgs,
                                                    register)

__all__ = ["REGISTRY", "Context", "Migration", "Note", "Outcome", "Result", "migrate_optimizer",
           "migrate_vgs", "register"]
