"""integrations/ imports upgd_migrate.optim, itself and one framework per module; importing the
package alone imports no framework."""
from __future__ import annotations

import ast
import json
import pathlib
import subprocess
import sys

PKG = pathlib.Path(__file__).resolve().parents[2] / "upgd_migrate" / "integrations"
FRAMEWORKS = {"sb3.py": "stable_baselines3", "lightning.py": "lightning"}


def _imports(path: pathlib.Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


def test_each_adapter_imports_optim_and_its_own_framework_only():
    for module in PKG.glob("*.py"):
        allowed = {"upgd_migrate.optim", "upgd_migrate.integrations", "torch", "__future__",
                   "typing", FRAMEWORKS.get(module.name, "torch")}
        for name in _imports(module):
            assert any(name == a or name.startswith(a + ".") for a in allowed), (module, name)


def test_importing_the_package_imports_no_framework():
    probe = ("import json, sys, upgd_migrate.integrations\n"
             "print(json.dumps(sorted(m for m in ('stable_baselines3', 'lightning', "
             "'tensorboard') if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, timeout=120)
    assert json.loads(out.stdout) == []
