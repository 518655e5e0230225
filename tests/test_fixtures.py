"""The committed fixtures are exactly what fixtures/generate.py writes."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("torch")
ROOT = Path(__file__).resolve().parents[1] / "fixtures"


def test_committed_fixtures_are_up_to_date(tmp_path):
    spec = importlib.util.spec_from_file_location("fixture_generator", ROOT / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(tmp_path) == 0
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.pt"))
    assert written, "the generator wrote nothing"
    for rel in written:
        committed = ROOT / rel
        assert committed.exists(), f"{rel} is not committed: run python fixtures/generate.py"
        assert committed.read_bytes() == (tmp_path / rel).read_bytes(), f"{rel} is stale"
