"""``--jobs N`` and ``--format jsonl`` on ``checkpoint``, ``checkpoint inspect`` and ``verify``."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from upgd_migrate.cli import main

FIX = Path(__file__).resolve().parents[2] / "fixtures"


@pytest.fixture
def run(tmp_path) -> Path:
    folder = tmp_path / "run"
    for name in ("pbt.pt", "training_loop.pt", "lightning.ckpt"):
        (folder / name.split(".")[0]).mkdir(parents=True)
        shutil.copy(FIX / "containers" / name, folder / name.split(".")[0] / name)
    (folder / "broken").mkdir()
    (folder / "broken" / "bad.pt").write_bytes(b"not a checkpoint")
    return folder


def _out(capsys, *args) -> tuple[int, str]:
    code = main(list(args))
    return code, capsys.readouterr().out


def _jsonl(text: str) -> tuple[list[dict], dict]:
    lines = [json.loads(line) for line in text.splitlines()]
    return lines[:-1], lines[-1]


def test_verify_jobs_give_the_same_document_and_jsonl_the_same_entries(run, capsys):
    code1, one = _out(capsys, "verify", str(run), "--steps", "4", "--format", "json", "-j", "1")
    code2, two = _out(capsys, "verify", str(run), "--steps", "4", "--format", "json", "-j", "2")
    assert code1 == code2 == 2 and json.loads(one) == json.loads(two)
    doc = json.loads(one)
    code, text = _out(capsys, "verify", str(run), "--steps", "4", "--format", "jsonl", "-j", "2")
    files, last = _jsonl(text)
    assert code == 2
    key = lambda f: f["path"]  # noqa: E731  (the stream comes in the order files finish)
    assert sorted(files, key=key) == sorted(
        doc["files"] + [{"path": e.split(": ")[0], "error": e} for e in doc["errors"]], key=key)
    assert last == {k: v for k, v in doc.items() if k != "files"}


def test_checkpoint_jobs_and_jsonl(run, tmp_path, capsys):
    code1, one = _out(capsys, "checkpoint", str(run), "-o", str(tmp_path / "a"), "--format",
                      "json", "-j", "1", "--verify")
    code2, two = _out(capsys, "checkpoint", str(run), "-o", str(tmp_path / "b"), "--format",
                      "json", "-j", "2", "--verify")
    assert code1 == code2 == 2
    assert one.replace(str(tmp_path / "a"), "OUT") == two.replace(str(tmp_path / "b"), "OUT")
    assert sorted(p.name for p in (tmp_path / "b").rglob("*")) == sorted(
        p.name for p in (tmp_path / "a").rglob("*"))
    code, text = _out(capsys, "checkpoint", str(run), "--check", "--format", "jsonl", "-j", "2")
    files, last = _jsonl(text)
    assert code == 2
    assert {f["path"]: f["status"] for f in files} == {
        str(run / "broken" / "bad.pt"): "error", str(run / "lightning" / "lightning.ckpt"):
        "would migrate", str(run / "pbt" / "pbt.pt"): "would migrate",
        str(run / "training_loop" / "training_loop.pt"): "would migrate"}
    assert last["summary"] == {"error": 1, "would migrate": 3} and last["exit_code"] == 2


def test_inspect_jsonl_streams_one_object_per_file(run, capsys):
    code, one = _out(capsys, "checkpoint", "inspect", str(run), "--format", "json", "-j", "1")
    doc = json.loads(one)
    code, text = _out(capsys, "checkpoint", "inspect", str(run), "--format", "jsonl")
    files, last = _jsonl(text)
    assert code == 2
    assert sorted(files, key=lambda f: f["path"]) == doc["files"]
    assert last == {"version": 1, "command": "checkpoint inspect", "summary": doc["summary"],
                    "exit_code": 2}


def test_text_output_stays_in_input_order_with_jobs(run, capsys):
    code, text = _out(capsys, "checkpoint", "inspect", str(run), "-j", "2")
    heads = [line.split(":")[0] for line in text.splitlines() if not line.startswith(" ")]
    assert heads == sorted(heads) and len(heads) == 3
