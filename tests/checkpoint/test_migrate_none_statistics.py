"""VGS states with None statistics (a reference VGS saved before its first step, or right after
the reference trainer's load reset them) migrate to a loadable 3.2 state in every version, and a
``vgs_version`` of "1.0" (the reference's default label) is the v1 layout."""
from __future__ import annotations

import warnings

import pytest
import torch
from ckpt_helpers import make_containers, optim_state, vgs_state, zip_members

from upgd_migrate.checkpoint import io
from upgd_migrate.checkpoint.steps import Context, migrate_vgs
from upgd_migrate.checkpoint.pipeline import Options, WriteBack, process
from upgd_migrate.optim import VarianceGradientScaler

NUMELS = [96, 16, 32, 2, 16, 1]
TENSOR_KEYS = ("param_grad_mean_ema", "param_grad_sq_ema", "param_numel")


def _none_state(version: str) -> dict:
    """The fixture of this version after the reference trainer's load: statistics None."""
    name = f"vgs_v{version.replace('.', '_')}.pt"
    return {**vgs_state(name), **dict.fromkeys(TENSOR_KEYS)}


def _loads_quietly(state: dict, params=None) -> VarianceGradientScaler:
    vgs = VarianceGradientScaler(params)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vgs.load_state_dict(state)
    return vgs


@pytest.mark.parametrize("version", ["2.0", "3.0", "3.1", "3.2"])
def test_none_statistics_migrate_to_a_loadable_state(version):
    sd = _none_state(version)
    result = migrate_vgs(sd, Context(param_numels=NUMELS))
    state = result.state
    assert result.applied == ["vgs.upgrade-3.2"] and result.generation == f"v{version}"
    assert state["vgs_version"] == "3.2" and state["statistics_step_count"] == 0
    assert all(state[k] is None for k in TENSOR_KEYS) and "legacy_statistics" not in state
    assert [n.text for n in result.notes][-1].endswith(
        "no statistics yet, they start at the next step")
    vgs = _loads_quietly(state, [torch.nn.Parameter(torch.zeros(n)) for n in NUMELS])
    assert vgs.step_count == sd["step_count"] and vgs.statistics_step_count == 0
    for p in vgs.params:
        p.grad = torch.randn_like(p)
    vgs.step()
    assert vgs.statistics_step_count == 1
    assert not migrate_vgs(state).applied  # stable: a second run has nothing to do


def test_label_one_point_zero_is_the_v1_layout():
    sd = {**vgs_state("vgs_v1.pt"), "vgs_version": "1.0"}
    result = migrate_vgs(sd, Context(param_numels=NUMELS))
    assert result.generation == "v1"
    assert result.applied == ["vgs.add-statistics", "vgs.upgrade-3.2"]
    _loads_quietly(result.state, [torch.nn.Parameter(torch.zeros(n)) for n in NUMELS])


def test_an_sb3_zip_with_none_statistics_migrates_to_a_loadable_member(tmp_path):
    members = make_containers.sb3_members(
        {"policy.optimizer.pth": optim_state("adaptive_upgd_g2.pt")}, _none_state("3.2"),
        {"sigma": 0.001, "adaptive_noise": False})
    src, out = tmp_path / "ppo.zip", tmp_path / "out.zip"
    make_containers.write_sb3(src, members)
    res = process(src, src.name, Options(WriteBack.WRITE, Context(), output=out))
    assert res.status == "migrated", res.error
    state = io.load_bytes(zip_members(out)["vgs_state.pth"][0], "vgs")
    assert state["vgs_version"] == "3.2" and state["param_numel"] is None
    _loads_quietly(state)
