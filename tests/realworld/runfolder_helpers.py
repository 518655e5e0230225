"""Shared by the run-folder round trips (transformers, accelerate, Ray Tune, torchtitan-style DCP,
Lightning sharded): a legacy optimizer for the runs to train with, the whole-folder migration as
a user runs it, and the checks on what a library resumed.

Every run trains with :class:`G1AdaptiveUPGD`: the packaged AdaptiveUPGD whose ``state_dict()``
is the one the reference code's second generation (G1) wrote, so every library saves a legacy
state its own way. The resumed runs load the migrated state into the packaged ``AdaptiveUPGD``
(:class:`Packaged`).
"""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest
import torch
from rw_helpers import cli, cli_here, expected_ratio

from upgd_migrate.optim import AdaptiveUPGD

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fixtures"))
import generate  # noqa: E402  (the legacy key layouts, written once)

SIGMA_ABS = 0.001  # the fixed (absolute) noise std of every legacy config
LR = 1e-4
# verify's scenarios, shortened: every state of every folder is verified three times (before,
# after -o, after --in-place); 8 steps still fail the fixed noise and pass the migrated one.
VERIFY = ("--steps", "8")
G1_GROUP_KEYS = {*generate.G0_GROUP, *generate.G1_KEYS}
# What the packaged optimizer adds to a group and the reference code never wrote.
PACKAGED_ONLY = set(AdaptiveUPGD([torch.zeros(1)]).defaults) - G1_GROUP_KEYS


def tiny_model() -> torch.nn.Module:
    """The runs' model (6 inputs, 16 hidden units, 1 output), the same weights every time."""
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))


class G1AdaptiveUPGD(AdaptiveUPGD):
    """Steps as the packaged optimizer (fixed noise: ``sigma`` is an absolute std) and saves
    the G1 layout: no ``instant_noise_scale``, no format marker; trainer keys (``initial_lr``,
    ...) stay."""

    def __init__(self, params, lr: float = LR, sigma: float = SIGMA_ABS, **kwargs) -> None:
        super().__init__(params, lr=lr, sigma=sigma, adaptive_noise=False, **kwargs)

    def state_dict(self) -> dict:
        sd = super().state_dict()
        groups = [{k: v for k, v in g.items() if k not in PACKAGED_ONLY}
                  for g in sd["param_groups"]]
        return {"state": sd["state"], "param_groups": groups}


class Packaged(AdaptiveUPGD):
    """The packaged optimizer built with the legacy constructor's arguments: the resumed run's."""

    def __init__(self, params, lr: float = LR, sigma: float = SIGMA_ABS) -> None:
        super().__init__(params, lr=lr, sigma=sigma)


def is_g1(state_dict: dict) -> bool:
    """A G1 AdaptiveUPGD state at fixed noise 0.001, as the run saved it."""
    return all(PACKAGED_ONLY.isdisjoint(g) and G1_GROUP_KEYS <= set(g)
               and g["adaptive_noise"] is False and g["sigma"] == SIGMA_ABS
               for g in state_dict["param_groups"])


def expected_sigmas(state_dict: dict) -> list[float]:
    """The calibrated relative sigma of each param group of a saved legacy state."""
    return [expected_ratio({"state": state_dict["state"], "param_groups": [g]}, SIGMA_ABS)
            for g in state_dict["param_groups"]]


def assert_resumed(groups: list[dict], want: list[float]) -> None:
    """The groups a library resumed: adaptive noise on, at the migrated (calibrated) sigma."""
    assert len(groups) == len(want)
    for group, sigma in zip(groups, want):
        assert group["adaptive_noise"] is True and group["instant_noise_scale"] is True
        assert group["sigma"] == pytest.approx(sigma, rel=1e-6)
        # The run's own moments put it away from 0.001, so a migration that kept it fails.
        assert abs(group["sigma"] / SIGMA_ABS - 1) > 0.05


def snapshot(folder: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``folder`` (links followed)."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def migrate_run(run: Path, out: Path, migrated: set[str], added: frozenset = frozenset()) -> None:
    """Migrate the whole run folder as a user would, first ``-o out``, then ``--in-place``.

    ``migrated``: the files (relative to ``run``) that hold a legacy state; ``added``: the
    files a migration adds (a DCP checkpoint's new data file). Checks that ``-o`` leaves
    ``run`` untouched and mirrors every file of it at the same relative path in ``out``,
    byte-identical except ``migrated``; that ``--in-place`` writes the same bytes;
    that a second ``--check`` of either folder finds nothing to do; that ``verify`` passes it.
    """
    before = snapshot(run)
    assert migrated <= set(before), sorted(before)
    code, text = cli_here("verify", run, *VERIFY)
    assert code == 1, text  # the fixed noise fails before the migration
    result = cli("checkpoint", run, "-o", out)  # once as a user types it, in its own process
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert snapshot(run) == before
    mirrored = snapshot(out)
    assert sorted(mirrored) == sorted({*before, *added})
    assert {rel for rel in before if mirrored[rel] != before[rel]} == migrated
    code, text = cli_here("checkpoint", run, "--in-place")
    assert code == 1, text
    assert snapshot(run) == mirrored
    for folder in (run, out):
        code, text = cli_here("checkpoint", folder, "--check")
        assert code == 0, text
        code, text = cli_here("verify", folder, *VERIFY)
        assert code == 0, text
