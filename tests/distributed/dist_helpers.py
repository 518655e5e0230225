"""Run a worker script on 2 gloo ranks on CPU and collect what each rank measured.

Each rank is a fresh ``python`` process (127.0.0.1, a free port, a wall-clock limit); it writes a
JSON dict of measurements that the tests assert on, so a failed check names its value. The temp
folder and the process group go away whatever happens.
"""
from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import time

import pytest
import torch

REPO = pathlib.Path(__file__).resolve().parents[2]
HERE = pathlib.Path(__file__).resolve().parent


def skip_unless_gloo() -> None:
    import torch.distributed as dist
    if not dist.is_available():
        pytest.skip("torch.distributed is not available in this torch build")
    if not dist.is_gloo_available():
        pytest.skip("the gloo backend is not available in this torch build")


def skip_unless_fully_shard() -> None:
    skip_unless_gloo()
    try:
        from torch.distributed.fsdp import fully_shard  # noqa: F401
    except ImportError:
        pytest.skip(f"torch {torch.__version__} has no torch.distributed.fsdp.fully_shard")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(script: str, world: int = 2, timeout: float = 120.0) -> list[dict]:
    """Run ``script`` (a file next to this one) as ``world`` ranks; return each rank's dict."""
    with tempfile.TemporaryDirectory(prefix="upgd-dist-") as tmp:
        port = free_port()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(HERE)]),
               "OMP_NUM_THREADS": "1"}
        procs = [subprocess.Popen([sys.executable, str(HERE / script), str(rank), str(world),
                                   str(port), tmp], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
                 for rank in range(world)]
        deadline = time.monotonic() + timeout
        outputs = []
        try:
            for proc in procs:
                left = max(deadline - time.monotonic(), 1.0)
                outputs.append(proc.communicate(timeout=left)[0])
        except subprocess.TimeoutExpired:
            pytest.fail(f"{script}: the ranks did not finish within {timeout:.0f} s")
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        failed = [f"rank {rank} exited {proc.returncode}:\n{out[-3000:]}"
                  for rank, (proc, out) in enumerate(zip(procs, outputs)) if proc.returncode]
        if failed:  # every failing rank: the first to fail is not always rank 0
            pytest.fail(f"{script}: " + "\n".join(failed))
        return [json.loads(pathlib.Path(tmp, f"rank{r}.json").read_text()) for r in range(world)]


def worker_main(scenario) -> None:
    """Entry of a worker script: ``script RANK WORLD PORT OUTDIR``; runs ``scenario(rank,
    world)`` in a gloo process group and writes its dict to ``OUTDIR/rank<RANK>.json``."""
    import torch.distributed as dist
    rank, world, port, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    try:
        result = scenario(rank, world)
        dist.barrier()
    finally:
        dist.destroy_process_group()
    pathlib.Path(out, f"rank{rank}.json").write_text(json.dumps(result))


def gather_max_diff(t: torch.Tensor) -> float:
    """max |rank_i - rank_0| of a tensor every rank holds (0.0: bit-identical)."""
    import torch.distributed as dist
    t = t.detach().flatten().double()
    pieces = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(pieces, t)
    return max(float((p - pieces[0]).abs().max()) for p in pieces)
