"""Shared helpers for the checkpoint tests (imported by name, not a conftest)."""
from __future__ import annotations

import importlib.util
import zipfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures"
OPTIM = sorted(p.name for p in (FIXTURES / "optim").glob("*.pt"))
VGS = sorted(p.name for p in (FIXTURES / "vgs").glob("*.pt"))


def _module(name: str):
    spec = importlib.util.spec_from_file_location(name, FIXTURES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_containers = _module("make_containers")


def load(path: Path):
    return torch.load(path, weights_only=True)


def optim_state(name: str) -> dict:
    return load(FIXTURES / "optim" / name)


def vgs_state(name: str) -> dict:
    return load(FIXTURES / "vgs" / name)


def assert_same(a, b, where: str = "") -> None:
    """Deep equality with torch.equal for tensors (dtype and shape included)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), where
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b and type(a) is type(b), f"{where}: {a!r} != {b!r}"


def assert_state_tensors_kept(before: dict, after: dict) -> None:
    """Every per-parameter entry of the original is still there, bit-identical."""
    for pid, entry in before["state"].items():
        for key, value in entry.items():
            assert_same(value, after["state"][pid][key], f"state[{pid}].{key}")


def zip_members(path: Path) -> dict[str, tuple]:
    with zipfile.ZipFile(path) as zf:
        return {i.filename: (zf.read(i), i.date_time, i.compress_type) for i in zf.infolist()}
