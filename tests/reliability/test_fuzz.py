"""Fuzz ``lint`` and ``config``: generated, mutated and hostile YAML never makes a traceback.

Every input ends as findings or a clean result (lint) and as exactly one counted outcome
(config); a rewritten file parses and a second run leaves it alone. Bombs run in a real
subprocess under a time limit and an address-space limit (RLIMIT_AS).
"""
from __future__ import annotations

import io
import json
import resource
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reliability_helpers import FIXTURES, cli, cli_env
from upgd_migrate.config.lint import lint_file
from upgd_migrate.config.migrate import FileJob, Mode, migrate_file
from upgd_migrate.config.migrations import SigmaPolicy

SEEDS = sorted((FIXTURES / "configs").glob("*.yaml"))
ENCODINGS = ["utf-8", "utf-8-sig", "utf-16", "utf-32", "latin-1", "cp1252"]
FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])
MEMORY_LIMIT = 1 << 30  # 1 GiB of address space: a bomb that expands would die here
TIME_LIMIT = 20.0


def _check_file(path: Path) -> None:
    """lint and config on ``path``: no exception; one outcome; a rewrite is idempotent."""
    findings = lint_file(str(path))
    assert all(f.path == str(path) and f.line >= 1 for f in findings)
    for _ in range(2):
        job = FileJob(SigmaPolicy(), Mode.WRITE, io.StringIO(), io.StringIO())
        migrate_file(str(path), job)
        report = job.report
        assert report.changed + report.already + report.unrelated + report.manual \
            + report.failed == 1, job.err.getvalue()
        if not report.changed:
            break
    else:
        pytest.fail(f"a second run rewrote {path} again:\n{job.err.getvalue()}")


@given(data=st.binary(max_size=2048))
@FUZZ
def test_random_bytes(tmp_path, data):
    path = tmp_path / "random.yaml"
    path.write_bytes(data)
    _check_file(path)


def _mutate(data: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    for where, length, new in edits:
        at = where % (len(data) + 1)
        data = data[:at] + new + data[at + length:]
    return data


YAML_BITS = st.sampled_from([b":", b"- ", b"&a ", b"*a", b"<<: *a\n", b"{", b"}", b"[", b"]",
                             b"!!int ", b"!!float ", b"!!python/object:os.system ", b"\t",
                             b"\n  ", b"'", b'"', b"#", b"? ", b"---\n", b"...\n", b"|\n",
                             b".nan", b"-.inf", b"1e999", b"9" * 5000, b"0x_", b"\xff",
                             b"\xef\xbb\xbf", b"\r", b"\x00", b"%YAML 1.1\n", b"sigma: "])


@given(seed=st.sampled_from(SEEDS), edits=st.lists(st.tuples(
    st.integers(0, 4096), st.integers(0, 8), YAML_BITS | st.binary(max_size=4)), max_size=6))
@FUZZ
def test_mutated_configs(tmp_path, seed, edits):
    path = tmp_path / "mutated.yaml"
    path.write_bytes(_mutate(seed.read_bytes(), edits))
    _check_file(path)


SCALARS = st.one_of(
    st.integers().map(str),
    st.sampled_from(["9" * 5000, "-" + "1" * 4400, "0x" + "f" * 5000, "1" * 400 + ".5e3"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from([".nan", ".inf", "-.Inf", "1e-6", "3.0e-4", "0o17", "0x1F", "0b101", "1_000",
                     "true", "no", "~", "null", "", "!!int abc", "!!float x", "!!bool maybe",
                     "AdaptiveUPGD", "UPGD", "FirstOrderGlobalUPGD", "sigma", "adaptive_noise"]),
    st.text(max_size=12).map(json.dumps))


def _flow(children):
    pairs = st.lists(st.tuples(SCALARS | children, children), max_size=5)
    return (st.lists(children, max_size=5).map(lambda xs: "[" + ", ".join(xs) + "]")
            | pairs.map(lambda ps: "{" + ", ".join(f"? {k} : {v}" for k, v in ps) + "}"))


NODES = st.recursive(SCALARS, _flow, max_leaves=30)
KWARGS = st.lists(st.tuples(st.sampled_from(["sigma", "adaptive_noise", "lr", "noise_beta",
                                             "instant_noise_scale", "min_noise_std",
                                             "beta_utility", "weight_decay", "1", "null"]),
                            SCALARS | NODES), max_size=6)


@given(name=SCALARS, kwargs=KWARGS, vgs=NODES, extra=NODES, encoding=st.sampled_from(ENCODINGS))
@FUZZ
def test_generated_configs(tmp_path, name, kwargs, vgs, extra, encoding):
    body = "\n".join(f"  {k}: {v}" for k, v in kwargs) or "  {}"
    text = (f"optimizer: {name}\noptimizer_kwargs:\n{body}\nvgs: {vgs}\nextra: {extra}\n"
            "notes: café, naïve, 東京\n")
    path = tmp_path / "generated.yaml"
    path.write_bytes(text.encode(encoding, errors="replace"))
    _check_file(path)


def billion_laughs() -> str:
    """The classic: nine levels of nine aliases, 9**9 (387 million) strings if expanded."""
    lines = ["optimizer: AdaptiveUPGD", "optimizer_kwargs: {lr: 0.001, sigma: 0.001}",
             'l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 10)]
    return "\n".join(lines) + "\n"


def merge_bomb() -> str:
    """Merge keys nine deep, nine sources each: exponential if merges are copied naively."""
    lines = ["optimizer: AdaptiveUPGD", "optimizer_kwargs: {lr: 0.001, sigma: 0.001}",
             "l0: &l0 {a: 1, b: 2, c: 3, d: 4, e: 5, f: 6, g: 7, h: 8, i: 9}"]
    lines += [f"l{i}: &l{i}\n  <<: [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 10)]
    return "\n".join(lines) + "\n"


HOSTILE = {
    "billion-laughs.yaml": billion_laughs().encode(),
    "merge-bomb.yaml": merge_bomb().encode(),
    "deep-flow.yaml": b"optimizer_kwargs: {sigma: 0.001}\na: " + b"[" * 20000 + b"]" * 20000,
    "deep-block.yaml": b"a:\n" + b"".join(b" " * i + b"- \n" for i in range(2000)),
    "deep-mapping.yaml": b"a: " + b"{a: " * 5000 + b"}" * 5000,
    "bad-tags.yaml": b"optimizer: AdaptiveUPGD\noptimizer_kwargs:\n  sigma: !!int abc\n"
                     b"  lr: !!float xyz\n  adaptive_noise: !!bool maybe\n",
    "self-merge.yaml": b"a: &a\n  <<: *a\n  sigma: 0.001\n",
    "huge-int.yaml": b"optimizer: UPGD\noptimizer_kwargs:\n  sigma: " + b"9" * 100_000 + b"\n",
    "nan-inf.yaml": b"optimizer: AdaptiveUPGD\noptimizer_kwargs: {sigma: .nan, lr: -.inf, "
                    b"adaptive_noise: true, noise_beta: .NaN}\n",
    "utf16-bom.yaml": "optimizer: UPGD\noptimizer_kwargs: {sigma: 0.001}\n".encode("utf-16"),
    "utf32-bom.yaml": "optimizer: UPGD\noptimizer_kwargs: {sigma: 0.001}\n".encode("utf-32"),
    "latin1.yaml": "# r\xe9sum\xe9\noptimizer: UPGD\noptimizer_kwargs: {sigma: 0.001}\n"
                   .encode("latin-1"),
    "too-big.yaml": b"# " + b"x" * (6 << 20) + b"\n",
    "binary.yaml": bytes(range(256)) * 64,
}


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


@pytest.mark.slow
@pytest.mark.parametrize("name", HOSTILE)
@pytest.mark.parametrize("command", ["lint", "config"])
def test_hostile_yaml_in_a_bounded_subprocess(tmp_path, name, command):
    path = tmp_path / name
    path.write_bytes(HOSTILE[name])
    start = time.monotonic()
    result = subprocess.run(cli(command, name), cwd=tmp_path, env=cli_env(), text=True,
                            capture_output=True, timeout=TIME_LIMIT, preexec_fn=_limited)
    elapsed = time.monotonic() - start
    output = result.stdout + result.stderr
    assert "Traceback" not in output and "MemoryError" not in output, output
    # lint reports an unusable file as a finding (1); config refuses it (2), as checkpoint does
    assert result.returncode in ((0, 1) if command == "lint" else (0, 1, 2)), output
    if result.returncode == 2:
        assert "cannot be migrated" in output, output
    assert elapsed < TIME_LIMIT / 2, f"{name}: {elapsed:.1f}s"
    if command == "lint":  # a finding for this file, or the clean summary
        assert name in output or "no findings" in output.lower() or output.strip() == "", output
    else:
        assert any(word in output for word in ("rewritten", "already migrated", "without UPGD",
                                               "manual fix", "cannot be migrated")), output
