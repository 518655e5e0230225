"""upgd-migrate: lint and migrate UPGD/VGS configs and checkpoints to adaptive noise.

Importing this package never imports torch: the lint and config paths must start fast
(a pre-commit hook). The torch half lives in :mod:`upgd_migrate.optim`.
"""
from __future__ import annotations

__version__ = "0.1.0"
