from __future__ import annotations

from upgd_migrate.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
