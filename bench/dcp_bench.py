"""``bench/checkpoint --dcp``: migrate a DCP folder in place and to -o, beside ``cp -r`` of it.

Writes, with ``torch.distributed.checkpoint.save`` (one process), a folder of about --size-gb:
model weights plus an AdaptiveUPGD G1 state (fixed noise, so the migration calibrates sigma
from the Adam moments) over every weight, float32 tensors of 16 MiB. Then, each in a fresh
process on the same page-cached folder, best of --repeat:

  cp -r       the peer: what copying the checkpoint costs
  -o          upgd-migrate checkpoint DIR -o OUT (a complete new folder: every data file copied)
  in place    upgd-migrate checkpoint DIR --in-place (reads the moments for calibration, writes
              one small data file and a new .metadata)
  in place, --sigma-ratio   the same without calibration: no tensor is read at all
  startup only   python importing torch and the package: the fixed part of each of ours

Between in-place runs the folder is put back as it was (old .metadata, new file removed).
Figures only; nothing is asserted. The temporary folder is deleted at the end.
"""
from __future__ import annotations

import shutil
import sys
import time
import warnings
from pathlib import Path

TENSOR_ELEMENTS = 4 * 1024 * 1024  # 16 MiB float32
STARTUP = "import upgd_migrate.checkpoint.pipeline, upgd_migrate.checkpoint.formats.dcp_write"


def generate(folder: Path, size_gb: float) -> tuple[int, int]:
    """(parameters, optimizer bytes). One weight and one set of moments, shared by every key:
    DCP writes each key's tensor on its own, so the folder has its full size on disk while
    this process holds 64 MiB."""
    import torch
    import torch.distributed.checkpoint as dcp

    warnings.filterwarnings("ignore", "torch.distributed is disabled")
    n = max(1, round(size_gb * 1e9 / (4 * 4 * TENSOR_ELEMENTS)))
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(TENSOR_ELEMENTS, generator=gen) * 0.02
    m = torch.randn(TENSOR_ELEMENTS, generator=gen) * 3e-3
    v = m * m + (torch.rand(TENSOR_ELEMENTS, generator=gen) + 0.5) * 1e-4
    u = torch.randn(TENSOR_ELEMENTS, generator=gen) * 1e-5
    names = [f"layers.{i}.weight" for i in range(n)]
    state = {k: {"step": 1200, "avg_utility": u, "first_moment": m, "sec_moment": v}
             for k in names}
    group = {"lr": 1e-4, "weight_decay": 0.001, "beta_utility": 0.999, "sigma": 0.001,
             "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "adaptive_noise": False,
             "noise_beta": 0.999, "min_noise_std": 1e-6, "params": names}
    dcp.save({"model": {k: w for k in names},
              "optim": {"state": state, "param_groups": [group]}}, checkpoint_id=str(folder))
    return n, 3 * n * 4 * TENSOR_ELEMENTS


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


def _restore(folder: Path, metadata: bytes) -> None:
    for p in folder.glob("__upgd_migrate_*.distcp"):
        p.unlink()
    (folder / ".metadata").write_bytes(metadata)


def run(args, measure) -> int:
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="upgd-bench-dcp-", dir=args.dir))
    try:
        src = tmp / "ckpt"
        t = time.perf_counter()
        n, optim_bytes = generate(src, args.size_gb)
        size = _size(src)
        print(f"generated DCP folder: {n} weights of 16 MiB + AdaptiveUPGD state "
              f"({optim_bytes / 1e9:.2f} GB), {size / 1e9:.3f} GB in "
              f"{len(list(src.iterdir()))} files, {time.perf_counter() - t:.1f} s")
        for p in src.iterdir():  # warm the page cache, as for the peer
            with open(p, "rb") as fh:
                while fh.read(64 << 20):
                    pass
        metadata = (src / ".metadata").read_bytes()
        cli = [sys.executable, "-m", "upgd_migrate", "checkpoint"]
        runs: dict[str, list] = {"cp -r": [], "-o": [], "in place": [],
                                 "in place, --sigma-ratio": [], "startup only": []}
        for _ in range(args.repeat):
            # the fixed cost inside every run of ours: Python, torch and the package imported
            runs["startup only"].append(measure([sys.executable, "-c", STARTUP]))
            shutil.rmtree(tmp / "copy", ignore_errors=True)
            runs["cp -r"].append(measure(["cp", "-r", str(src), str(tmp / "copy")]))
            shutil.rmtree(tmp / "copy", ignore_errors=True)
            shutil.rmtree(tmp / "out", ignore_errors=True)
            runs["-o"].append(measure([*cli, str(src), "-o", str(tmp / "out")]))
            shutil.rmtree(tmp / "out", ignore_errors=True)
            runs["in place"].append(measure([*cli, str(src), "--in-place"]))
            written = sum(p.stat().st_size for p in src.glob("__upgd_migrate_*.distcp"))
            _restore(src, metadata)
            runs["in place, --sigma-ratio"].append(
                measure([*cli, str(src), "--in-place", "--sigma-ratio", "0.005"]))
            _restore(src, metadata)
        report(runs, size, written)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def report(runs: dict, size: int, written: int) -> None:
    peer = min(r["wall"] for r in runs["cp -r"])
    for name, rs in runs.items():
        best = min(r["wall"] for r in rs)
        walls = ", ".join(f"{r['wall']:.2f}" for r in rs)
        rss = min(r["maxrss"] for r in rs)
        print(f"{name:24s} wall {best:7.2f} s = {best / peer:5.2f}x cp -r (runs: {walls})   "
              f"peak RSS {rss / 1e9:6.3f} GB = {rss / size:.3f}x folder")
    print(f"in place wrote {written} bytes of new data (+ .metadata); every existing data file "
          "left as it was")
