"""The built distributions: an sdist that is a complete, testable source tree, and a wheel
that carries the license and ``py.typed``.

Both are built from a copy of the working tree (so the build writes no ``build/`` or
``*.egg-info`` into it), without build isolation, with the ``setuptools`` and ``build`` of the
``dev`` extra; the wheel is built from the unpacked sdist, as ``python -m build`` does, so a
file the sdist forgets breaks the wheel too.
"""
from __future__ import annotations

import email
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from conftest import REPO

# Folders the sdist carries whole: the tests (golden files and helper modules included) and
# what they read, the committed schemas, the benchmark scripts and the docs.
TREES = ("tests", "fixtures", "schemas", "bench", "docs")
TOP_FILES = ("LICENSE", "README.md", "pyproject.toml", "MANIFEST.in", ".pre-commit-hooks.yaml",
             ".ci/run")
JUNK = ("__pycache__", ".pyc", ".pytest_cache", ".hypothesis", "walkthrough/")
COPY_IGNORE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info",
                                     "__pycache__", "*.pyc", ".pytest_cache", ".hypothesis",
                                     "walkthrough")


def source_files(top: Path, tree: str) -> set[str]:
    """Files under ``top/tree``: git's list in a checkout (new files not yet committed
    included), else the tree (an unpacked sdist), caches left out."""
    if (top / ".git").exists():
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard",
                              "-z", "--", tree], cwd=top, check=True,
                             capture_output=True, text=True).stdout
        return {name for name in out.split("\0") if name and (top / name).is_file()}
    return {p.relative_to(top).as_posix() for p in (top / tree).rglob("*")
            if p.is_file() and not any(j.strip("/") in p.parts or p.suffix == j for j in JUNK)}


def build(src: Path, out: Path, *kinds: str) -> None:
    """``python -m build`` without isolation; the backend's own hooks if ``build`` is absent."""
    if importlib.util.find_spec("build") is not None:
        cmd = [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out),
               *(f"--{k}" for k in kinds), str(src)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return
    for kind in kinds:
        code = ("import sys; from setuptools import build_meta as b; "
                f"b.build_{kind}(sys.argv[1])")
        subprocess.run([sys.executable, "-c", code, str(out)], cwd=src, check=True,
                       capture_output=True, timeout=300)


@pytest.fixture(scope="module")
def dists(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("dists")
    src, out, unpacked = base / "src", base / "out", base / "unpacked"
    shutil.copytree(REPO, src, ignore=COPY_IGNORE)
    build(src, out, "sdist")
    (sdist,) = out.glob("upgd_migrate-*.tar.gz")
    with tarfile.open(sdist) as tar:
        tar.extractall(unpacked, filter="data")
    (root,) = unpacked.iterdir()
    build(root, out, "wheel")
    (wheel,) = out.glob("upgd_migrate-*.whl")
    return {"sdist": sdist, "wheel": wheel, "root": root}


def sdist_members(sdist: Path) -> set[str]:
    with tarfile.open(sdist) as tar:
        return {m.name.split("/", 1)[1] for m in tar.getmembers() if m.isfile()}


def test_sdist_carries_the_whole_tested_tree(dists):
    members = sdist_members(dists["sdist"])
    for tree in TREES:
        expected = source_files(REPO, tree)
        assert expected, f"{tree}/ is empty"
        assert sorted(expected - members) == [], f"{tree}/ files missing from the sdist"
    assert set(TOP_FILES) <= members
    assert "upgd_migrate/py.typed" in members
    # The pieces other tests import or compare against, named so a rule that drops them fails.
    for name in ("tests/conftest.py", "tests/realworld/rw_helpers.py",
                 "tests/checkpoint/ckpt_helpers.py", "fixtures/containers/ppo.zip",
                 "fixtures/generate.py", "schemas/optimizer-config.schema.json", "bench/optim",
                 "tests/config/golden/config/layout-a.out.yaml"):
        assert name in members, name
    assert [m for m in members if any(j in m for j in JUNK)] == []


def test_sdist_metadata_has_the_spdx_license_urls_and_classifiers(dists):
    with tarfile.open(dists["sdist"]) as tar:
        name = next(m for m in tar.getnames() if m.count("/") == 1 and m.endswith("/PKG-INFO"))
        meta = email.message_from_bytes(tar.extractfile(name).read())
    assert meta["License-Expression"] == "MIT"
    assert meta.get_all("License-File") == ["LICENSE"]
    assert meta["License"] is None  # the deprecated table form is gone
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL"))
    assert {"Homepage", "Source", "Issues", "Documentation"} <= urls.keys()
    assert all(u.startswith("https://") for u in urls.values())
    classifiers = meta.get_all("Classifier")
    assert "Typing :: Typed" in classifiers
    assert not [c for c in classifiers if c.startswith("License ::")]  # PEP 639 forbids both


def test_wheel_carries_license_and_py_typed_and_only_the_package(dists):
    with zipfile.ZipFile(dists["wheel"]) as whl:
        names = whl.namelist()
        info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        assert whl.read(f"{info}/licenses/LICENSE") == (REPO / "LICENSE").read_bytes()
        assert "upgd_migrate/py.typed" in names
        meta = email.message_from_bytes(whl.read(f"{info}/METADATA"))
    assert meta["License-Expression"] == "MIT"
    assert {n.split("/")[0] for n in names} == {"upgd_migrate", info}
    assert b"MIT License" in (REPO / "LICENSE").read_bytes()
    assert "upgd-migrate contributors" in (REPO / "LICENSE").read_text()


@pytest.mark.slow
def test_unpacked_sdist_runs_its_tests(dists):
    # The package, the fixtures and the generator, the schemas and the layout rules all come
    # from the sdist alone: nothing of the checkout is on the path.
    root = dists["root"]
    env = {**os.environ, "PYTHONPATH": str(root), "NO_COLOR": "1"}
    where = subprocess.run([sys.executable, "-c",
                            "import upgd_migrate; print(upgd_migrate.__file__)"],
                           cwd=root, env=env, capture_output=True, text=True, check=True)
    assert Path(where.stdout.strip()).is_relative_to(root)
    tests = ["tests/test_layout.py", "tests/test_schema.py", "tests/test_fixtures.py",
             "tests/config/test_migrate_config.py"]
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           *tests], cwd=root, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and " failed" not in done.stdout
