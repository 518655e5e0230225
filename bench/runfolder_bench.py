"""``bench/checkpoint --runfolder``: ``-o`` of a whole run folder beside ``cp -r`` + ``sync``.

Two runs, generated into a temporary folder:

  population  a population-based-training experiment of --members trial folders (64), each with
              ``checkpoint_000001/checkpoint.pt`` (4 weights and a legacy AdaptiveUPGD G1 state
              over them: 16 float32 tensors of 100k elements, 6.4 MB) and small JSON files
  DCP run     ``run/step-100/``: a DCP folder of about --dcp-gb (see bench/dcp_bench.py) beside
              ``config.json``

For each, in fresh processes on the page-cached folder, best of --repeat:

  ours        upgd-migrate checkpoint RUN -o OUT (every file mirrored, the states migrated,
              each written file fsynced)
  peer        cp -r RUN OUT && sync
  start-up    upgd-migrate checkpoint inspect of one tiny file: the fixed cost of any command
  ours, --sigma-ratio   the same -o without calibration (no moment read): what the mirror
              itself costs

and the ratio ours / (peer + start-up) (target at most 1.2x), from the best of each column and
as the median of each repeat's own ratio. Then a rerun over the migrated
OUT (``--check``): its wall time and the bytes it read (``rchar`` of /proc/self/io, beyond what
the start-up reads), against the run's size. Figures only; nothing is asserted.
"""
from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ELEMENTS = 100_000
# Runs the CLI in this process, then prints the bytes it read through read() calls.
READ_COUNTER = """
import json, sys
from upgd_migrate.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
io = dict(line.split(": ") for line in open("/proc/self/io").read().splitlines())
print(json.dumps({"rchar": int(io["rchar"])}))
"""


def population(folder: Path, members: int) -> int:
    import torch

    gen = torch.Generator().manual_seed(0)
    for i in range(members):
        trial = folder / f"train_fn_{i:05d}" / "checkpoint_000001"
        trial.mkdir(parents=True)
        t = [torch.randn(ELEMENTS, generator=gen) for _ in range(4)]
        state = {p: {"step": 1200, "avg_utility": t[p] * 1e-5, "first_moment": t[p] * 3e-3,
                     "sec_moment": t[p] * t[p] * 1e-5 + 1e-4} for p in range(4)}
        group = {"lr": 1e-4, "weight_decay": 0.001, "beta_utility": 0.999, "sigma": 0.001,
                 "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "adaptive_noise": False,
                 "noise_beta": 0.999, "min_noise_std": 1e-6, "params": [0, 1, 2, 3]}
        torch.save({"model": {f"w{p}": t[p] for p in range(4)},
                    "optimizer": {"state": state, "param_groups": [group]}},
                   trial / "checkpoint.pt")
        (trial.parent / "params.json").write_text(json.dumps({"lr": 1e-4}))
        (trial.parent / "result.json").write_text(json.dumps({"loss": 1.0}) + "\n")
    return _size(folder)


def dcp_run(folder: Path, size_gb: float) -> int:
    from dcp_bench import generate

    generate(folder / "step-100", size_gb)
    (folder / "config.json").write_text("{}")
    return _size(folder)


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _warm(folder: Path) -> None:
    for p in folder.rglob("*"):
        if p.is_file():
            with open(p, "rb") as fh:
                while fh.read(64 << 20):
                    pass


def _rchar(args: list[str]) -> int:
    out = subprocess.run([sys.executable, "-c", READ_COUNTER, *args], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["rchar"]


def compare(name: str, src: Path, tmp: Path, repeat: int, measure, tiny: Path) -> None:
    cli = [sys.executable, "-m", "upgd_migrate", "checkpoint"]
    runs: dict[str, list[float]] = {"ours": [], "peer": [], "start-up": [],
                                    "ours, --sigma-ratio": []}
    for _ in range(repeat):
        runs["start-up"].append(measure([*cli, "inspect", str(tiny)])["wall"])
        shutil.rmtree(tmp / "copy", ignore_errors=True)
        runs["peer"].append(measure(["sh", "-c", f"cp -r '{src}' '{tmp / 'copy'}' && sync"])
                            ["wall"])
        shutil.rmtree(tmp / "copy", ignore_errors=True)
        shutil.rmtree(tmp / "out", ignore_errors=True)
        runs["ours"].append(measure([*cli, str(src), "-o", str(tmp / "out")])["wall"])
        shutil.rmtree(tmp / "out", ignore_errors=True)
        runs["ours, --sigma-ratio"].append(measure([*cli, str(src), "-o", str(tmp / "out"),
                                                    "--sigma-ratio", "0.005"])["wall"])
        shutil.rmtree(tmp / "out", ignore_errors=True)
    subprocess.run([*cli, str(src), "-o", str(tmp / "out")], check=False, capture_output=True)
    best = {k: min(v) for k, v in runs.items()}
    ratio = best["ours"] / (best["peer"] + best["start-up"])
    print(f"{name}: ours {best['ours']:.2f} s, peer cp -r + sync {best['peer']:.2f} s, "
          f"start-up {best['start-up']:.2f} s, ratio {ratio:.2f}x (target <= 1.20x: "
          f"{'met' if ratio <= 1.2 else 'NOT met'})")
    # Each repeat's own ratio: its three runs met the same machine, where the best of each
    # column may come from different moments of a noisy one.
    each = sorted(o / (p + s) for o, p, s in zip(runs["ours"], runs["peer"], runs["start-up"]))
    print(f"  each repeat's own ratio: {', '.join(f'{r:.2f}' for r in each)}x "
          f"(median {statistics.median(each):.2f}x)")
    without = best["ours, --sigma-ratio"] / (best["peer"] + best["start-up"])
    print(f"  without calibration (--sigma-ratio: no moment is read): "
          f"{best['ours, --sigma-ratio']:.2f} s, ratio {without:.2f}x")
    print("  runs: " + "; ".join(f"{k} " + ", ".join(f"{w:.2f}" for w in v)
                                 for k, v in runs.items()))
    t = time.perf_counter()
    subprocess.run([*cli, "--check", str(tmp / "out")], check=False, capture_output=True)
    wall = time.perf_counter() - t
    read = _rchar(["checkpoint", "--check", str(tmp / "out")]) - _rchar(
        ["checkpoint", "inspect", str(tiny)])
    print(f"  rerun --check over OUT: {wall:.2f} s, read {read / 1e6:.2f} MB beyond start-up "
          f"of {_size(tmp / 'out') / 1e6:.0f} MB in the run")
    shutil.rmtree(tmp / "out", ignore_errors=True)


def run(args, measure) -> int:
    import tempfile

    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    tmp = Path(tempfile.mkdtemp(prefix="upgd-bench-run-", dir=args.dir))
    try:
        tiny = tmp / "tiny.pt"
        torch.save({"state": {}, "param_groups": [{"lr": 0.1, "sigma": 0.001,
                                                   "beta_utility": 0.9, "params": []}]}, tiny)
        if args.members:
            t = time.perf_counter()
            size = population(tmp / "pop", args.members)
            print(f"population: {args.members} trials, {size / 1e6:.0f} MB, generated in "
                  f"{time.perf_counter() - t:.1f} s")
            _warm(tmp / "pop")
            compare("population", tmp / "pop", tmp, args.repeat, measure, tiny)
            shutil.rmtree(tmp / "pop")
        if args.dcp_gb:
            t = time.perf_counter()
            size = dcp_run(tmp / "run", args.dcp_gb)
            print(f"DCP run: {size / 1e9:.2f} GB, generated in {time.perf_counter() - t:.1f} s")
            _warm(tmp / "run")
            compare("DCP run", tmp / "run", tmp, args.repeat, measure, tiny)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0
