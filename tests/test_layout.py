"""The dependency rules of the layout (ARCHITECTURE.md), read from the source itself."""
from __future__ import annotations

import ast
import json
import pathlib
import subprocess
import sys

import pytest

PKG = pathlib.Path(__file__).resolve().parent.parent / "upgd_migrate"
MODULES = sorted(PKG.rglob("*.py"))


def _name(path: pathlib.Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: pathlib.Path) -> set[str]:
    """Every module ``path`` imports, at import time or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def _calls(path: pathlib.Path, dotted: str) -> bool:
    obj, attr = dotted.split(".")
    return any(isinstance(n, ast.Attribute) and n.attr == attr
               and isinstance(n.value, ast.Name) and n.value.id == obj
               for n in ast.walk(ast.parse(path.read_text())))


def _importers(prefix: str) -> set[str]:
    return {_name(m) for m in MODULES
            if any(i == prefix or i.startswith(prefix + ".") for i in _imports(m))}


def test_at_most_ten_modules_at_the_top():
    top = [p.name for p in PKG.glob("*.py")]
    assert len(top) <= 10, top


def test_each_package_says_what_it_is_for():
    for init in PKG.glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and "import" in doc.lower(), f"{init}: the docstring says what it may import"


def test_nothing_imports_the_cli():
    assert _importers("upgd_migrate.cli") == {"upgd_migrate.__main__"}


def test_only_yaml_io_imports_ruamel():
    assert _importers("ruamel") == {"upgd_migrate.config.yaml_io"}


@pytest.mark.parametrize("call", ["torch.load", "torch.save"])
def test_only_checkpoint_io_loads_or_saves_torch_files(call):
    assert {_name(m) for m in MODULES if _calls(m, call)} == {"upgd_migrate.checkpoint.io"}


def test_nothing_unpickles_with_plain_pickle():
    offenders = {_name(m) for m in MODULES
                 if _calls(m, "pickle.load") or _calls(m, "pickle.loads")}
    assert offenders == set()


def test_optim_imports_nothing_of_the_package_outside_itself():
    for m in PKG.joinpath("optim").rglob("*.py"):
        outside = {i for i in _imports(m) if i.startswith("upgd_migrate")
                   and not i.startswith("upgd_migrate.optim")}
        assert not outside, f"{m}: {outside}"


def test_config_and_the_lint_path_import_neither_torch_nor_pydantic():
    config = sorted(_name(m) for m in PKG.joinpath("config").rglob("*.py"))
    probe = ("import json, sys\n"
             f"for name in {config + ['upgd_migrate.commands.lint', 'upgd_migrate.cli']!r}:\n"
             "    __import__(name)\n"
             "print(json.dumps(sorted(m for m in ('torch', 'pydantic') if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, timeout=60)
    assert json.loads(out.stdout) == []


def test_each_integration_imports_optim_and_its_own_framework_only():
    frameworks = {"sb3.py": "stable_baselines3", "lightning.py": "lightning"}
    for module in PKG.joinpath("integrations").glob("*.py"):
        allowed = {"upgd_migrate.optim", "upgd_migrate.integrations", "torch", "__future__",
                   "typing", frameworks.get(module.name, "torch")}
        for name in _imports(module):
            assert any(name == a or name.startswith(a + ".") for a in allowed), (module, name)


def test_importing_the_integrations_imports_no_framework():
    probe = ("import json, sys, upgd_migrate.integrations\n"
             "print(json.dumps(sorted(m for m in ('stable_baselines3', 'lightning', "
             "'tensorboard') if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, timeout=120)
    assert json.loads(out.stdout) == []


def _package_graph(prefix: str) -> dict[str, set[str]]:
    """Each module under ``prefix`` -> the modules under ``prefix`` it names in an import."""
    names = {_name(m): m for m in MODULES if _name(m).startswith(prefix)}
    return {name: {i for i in _imports(path) if i in names and i != name}
            for name, path in names.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import circle in ``graph`` (depth-first, colouring), or [] when there is none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        path.pop()
        return []

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return []


def test_the_cycle_finder_finds_a_circle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_no_import_circle_in_checkpoint():
    graph = _package_graph("upgd_migrate.checkpoint")
    assert "upgd_migrate.checkpoint.formats.base" in graph  # the walk saw the subpackages
    assert _cycle(graph) == []


def test_format_modules_import_base_never_the_dispatcher():
    graph = _package_graph("upgd_migrate.checkpoint")
    for name, deps in graph.items():
        if name.startswith("upgd_migrate.checkpoint.formats."):
            assert "upgd_migrate.checkpoint.formats" not in deps, name
    assert not {d for d in graph["upgd_migrate.checkpoint.steps.registry"]
                if d.startswith("upgd_migrate.checkpoint.steps.")}
