"""Shared by the real-world round trips: the CLI as a user runs it, and the expected values.

The expected sigma is computed here from the saved moments on its own, not through
``upgd_migrate.optim.calibrate``, so a wrong calibration fails the tests instead of agreeing
with itself.
"""
from __future__ import annotations

import contextlib
import io
import math
import os
import subprocess
import sys

import torch


def cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    """``upgd-migrate ARGS`` in a fresh process, as a user types it."""
    env = {**os.environ, "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "upgd_migrate", *map(str, args)], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=300)


def cli_here(*args: str) -> tuple[int, str]:
    """``upgd-migrate ARGS`` in this process: (exit code, stdout and stderr as one text).

    For repeated calls: a fresh process spends seconds importing torch before it does anything.
    """
    from upgd_migrate.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        code = main([str(a) for a in args])
    return code, buf.getvalue()


def expected_ratio(state_dict: dict, sigma_abs: float) -> float:
    """``sigma_abs / rms(d)``, ``d = m̂/(sqrt(v̂)+eps)`` pooled over every tensor of group 0.

    That ratio gives the first resumed step the absolute noise level the fixed-noise run had.
    """
    group = state_dict["param_groups"][0]
    b1, b2, eps = group["beta1"], group["beta2"], group["eps"]
    energy, elements = 0.0, 0
    for pid in group["params"]:
        entry = state_dict["state"][pid]
        t = int(entry["step"])
        m_hat = entry["first_moment"].double() / (1 - b1 ** t)
        v_hat = entry["sec_moment"].double() / (1 - b2 ** t)
        d = m_hat / (v_hat.sqrt() + eps)
        energy += float(d.pow(2).sum())
        elements += d.numel()
    return sigma_abs / math.sqrt(energy / elements)


def state_tensors(state: dict) -> dict:
    """``{param id: {key: tensor}}`` of an optimizer state (tensors only), cloned."""
    return {pid: {k: v.detach().clone() for k, v in entry.items() if torch.is_tensor(v)}
            for pid, entry in state.items()}


def assert_bit_identical(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for pid in a:
        assert a[pid].keys() == b[pid].keys(), pid
        for key in a[pid]:
            x, y = a[pid][key], b[pid][key]
            assert x.dtype == y.dtype and x.shape == y.shape, (pid, key)
            assert torch.equal(x, y), (pid, key)
