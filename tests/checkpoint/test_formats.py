from __future__ import annotations

import hashlib
import json
import warnings

import pytest
import torch
from ckpt_helpers import (FIXTURES, OPTIM, VGS, assert_same, assert_state_tensors_kept, load,
                          make_containers, optim_state, vgs_state, zip_members)

from upgd_migrate.checkpoint import io
from upgd_migrate.checkpoint.formats import sb3zip as sb3
from upgd_migrate.checkpoint.formats import open_checkpoint
from upgd_migrate.checkpoint.detect import FORMAT_KEY
from upgd_migrate.checkpoint.steps import Context
from upgd_migrate.checkpoint.pipeline import Options, WriteBack, process
from upgd_migrate.optim import VarianceGradientScaler

C = FIXTURES / "containers"
BUILDERS = {"training-loop dict": make_containers.build_training_loop,
            "Lightning checkpoint": make_containers.build_lightning,
            "population-based-training file": make_containers.build_pbt}
NUMELS = [96, 16, 32, 2, 16, 1]


@pytest.mark.parametrize("name,container,wheres", [
    ("training_loop.pt", "training-loop dict", ["optimizer", "vgs"]),
    ("lightning.ckpt", "Lightning checkpoint",
     ["optimizer_states[0]", "callbacks.VGSCallback.vgs_state"]),
    ("pbt.pt", "population-based-training file", ["data.optimizer_state", "data.vgs_state"]),
    ("ppo.zip", "stable-baselines3 zip", ["policy.optimizer.pth", "vgs_state.pth"]),
    ("sac.zip", "stable-baselines3 zip",
     ["actor.optimizer.pth", "critic.optimizer.pth", "vgs_state.pth"]),
])
def test_containers_are_detected(name, container, wheres):
    ckpt = open_checkpoint(C / name)
    assert ckpt.container == container
    assert [s.where for s in ckpt.slots] == wheres


def test_raw_states_are_detected():
    assert open_checkpoint(FIXTURES / "optim" / "upgd.pt").container == "optimizer state"
    assert open_checkpoint(FIXTURES / "vgs" / "vgs_v1.pt").container == "VGS state"


def _write_opts(tmp_path):
    return Options(WriteBack.WRITE, Context(), output=tmp_path / "out")


def _migrate(path, out):
    res = process(path, path.name, Options(WriteBack.WRITE, Context(), output=out))
    assert res.status == "migrated", res.error
    return res


@pytest.mark.parametrize("container", BUILDERS)
@pytest.mark.parametrize("optim", OPTIM)
def test_every_generation_in_every_torch_container(tmp_path, container, optim):
    vgs = vgs_state("vgs_v3_1.pt")
    root = BUILDERS[container](optim_state(optim), vgs)
    src = tmp_path / "in.pt"
    torch.save(root, src)
    _migrate(src, tmp_path / "a.pt")
    out = load(tmp_path / "a.pt")
    ckpt_in, ckpt_out = open_checkpoint(src), open_checkpoint(tmp_path / "a.pt")
    assert ckpt_out.container == container
    opt_in, opt_out = ckpt_in.slots[0].state, ckpt_out.slots[0].state
    assert_state_tensors_kept(opt_in, opt_out)
    assert all(g[FORMAT_KEY] == 1 for g in opt_out["param_groups"])
    # Everything but the two states is bit-identical.
    strip = {"optimizer", "vgs", "optimizer_states", "callbacks", "data"}
    assert_same({k: v for k, v in root.items() if k not in strip},
                {k: v for k, v in out.items() if k not in strip})
    model_key = {"training-loop dict": ("model",), "Lightning checkpoint": ("state_dict",),
                 "population-based-training file": ("data", "policy_state")}[container]
    a, b = root, out
    for k in model_key:
        a, b = a[k], b[k]
    assert_same(a, b)
    # Twice: the second run has nothing to do; migrating again from scratch is byte-identical.
    assert process(tmp_path / "a.pt", "a.pt", _write_opts(tmp_path)).status == "already current"
    _migrate(src, tmp_path / "b.pt")
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()


@pytest.mark.parametrize("vgs", VGS)
def test_every_vgs_version_in_an_sb3_zip(tmp_path, vgs):
    members = make_containers.sb3_members(
        {"policy.optimizer.pth": optim_state("adaptive_upgd_g1.pt")}, vgs_state(vgs),
        {"sigma": 0.001, "adaptive_noise": False})
    src = tmp_path / "m.zip"
    make_containers.write_sb3(src, members)
    _migrate(src, tmp_path / "out.zip")
    state = io.load_bytes(zip_members(tmp_path / "out.zip")["vgs_state.pth"][0], "vgs")
    scaler = VarianceGradientScaler([torch.zeros(n) for n in NUMELS])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scaler.load_state_dict(state)
    assert state["vgs_version"] == "3.2"


def test_sb3_zip_keeps_other_members_and_updates_data_and_sidecar(tmp_path):
    out = tmp_path / "ppo.zip"
    res = _migrate(C / "ppo.zip", out)
    before, after = zip_members(C / "ppo.zip"), zip_members(out)
    assert list(before) == list(after)
    changed = {"data", "policy.optimizer.pth", "vgs_state.pth"}
    for name in set(before) - changed:
        assert before[name] == after[name], name  # bytes, date and compression
    data_in, data_out = json.loads(before["data"][0]), json.loads(after["data"][0])
    assert data_out["policy_class"] == data_in["policy_class"] == make_containers.CLOUDPICKLED
    group = io.load_bytes(after["policy.optimizer.pth"][0], "opt")["param_groups"][0]
    assert data_out["_optimizer_kwargs"] == {**data_in["_optimizer_kwargs"],
                                             "sigma": group["sigma"], "adaptive_noise": True,
                                             "instant_noise_scale": True}
    assert {k: v for k, v in data_out.items() if k != "_optimizer_kwargs"} == \
        {k: v for k, v in data_in.items() if k != "_optimizer_kwargs"}
    sidecar = json.loads((tmp_path / "ppo.zip.sidecar.json").read_text())
    blob = out.read_bytes()
    assert sidecar == {"sha256": hashlib.sha256(blob).hexdigest(), "size": len(blob),
                       "saved_by": "trainer checkpoint callback"}
    assert res.notes == ["data._optimizer_kwargs: sigma=" + f"{group['sigma']:.6g}" +
                         ", adaptive_noise=True, instant_noise_scale=True",
                         "ppo.zip.sidecar.json: sha256 and size updated"]


def test_sb3_zip_twice_is_byte_identical(tmp_path):
    _migrate(C / "sac.zip", tmp_path / "a.zip")
    _migrate(C / "sac.zip", tmp_path / "b.zip")
    assert (tmp_path / "a.zip").read_bytes() == (tmp_path / "b.zip").read_bytes()
    again = process(tmp_path / "a.zip", "a.zip", _write_opts(tmp_path))
    assert again.status == "already current"


def test_cloudpickled_optimizer_kwargs_are_never_touched():
    data = json.dumps({"_optimizer_kwargs": make_containers.CLOUDPICKLED}, indent=4).encode()
    state = {"param_groups": [{"sigma": 0.004, "adaptive_noise": True, FORMAT_KEY: 1}]}
    new, notes = sb3.sync_data(data, state)
    assert new == data
    assert notes == ["_optimizer_kwargs in data is cloudpickled: left as is (never unpickled); "
                     "set sigma/adaptive_noise in your training config"]


def test_unsafe_member_in_a_zip_is_refused(tmp_path):
    members = make_containers.sb3_members({}, None, {})
    members["policy.optimizer.pth"] = make_containers._torch_bytes({"f": __import__("fractions")
                                                                      .Fraction(1, 2)})
    path = tmp_path / "bad.zip"
    make_containers.write_sb3(path, members, sidecar=False)
    res = process(path, "bad.zip", _write_opts(tmp_path))
    assert res.status == "error"
    assert res.error.startswith(f"{path}:policy.optimizer.pth: refused: loading it needs "
                                "globals outside the weights-only allowlist: fractions.Fraction")


def test_committed_container_fixtures_are_up_to_date(tmp_path):
    assert make_containers.main(tmp_path) == 0
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == sorted(p.name for p in C.iterdir())
    for name in written:
        assert (tmp_path / name).read_bytes() == (C / name).read_bytes(), f"{name} is stale"


def _build(container: str, optim: dict, vgs: dict, path):
    if container == "stable-baselines3 zip":
        members = make_containers.sb3_members({"policy.optimizer.pth": optim}, vgs,
                                              {"sigma": 0.001, "adaptive_noise": True})
        make_containers.write_sb3(path, members)
    else:
        torch.save(BUILDERS[container](optim, vgs), path)


@pytest.mark.parametrize("container", [*BUILDERS, "stable-baselines3 zip"])
def test_every_generation_and_vgs_version_in_every_container_verifies(tmp_path, container):
    """7 generations x 5 VGS versions (cycled, so each version meets each container)."""
    from upgd_migrate.verify.drive import verify_states

    for i, optim in enumerate(OPTIM):
        src = tmp_path / f"{i}.zip"
        _build(container, optim_state(optim), vgs_state(VGS[i % len(VGS)]), src)
        out = tmp_path / f"{i}.out.zip"
        _migrate(src, out)
        ckpt = open_checkpoint(out)
        assert ckpt.container == container
        reports = verify_states([(s.where, s.kind, s.state) for s in ckpt.slots], steps=16)
        assert [r.kind for r in reports] == ["optimizer", "vgs"]
        failed = [(r.where, c.name, c.detail) for r in reports for c in r.checks if c.ok is False]
        assert not failed, (optim, VGS[i % len(VGS)], failed)


def test_sb3_zip_with_only_its_vgs_state_to_migrate(tmp_path):
    current = optim_state("adaptive_upgd_g1.pt")
    from upgd_migrate.checkpoint.steps import migrate_optimizer

    members = make_containers.sb3_members(
        {"policy.optimizer.pth": migrate_optimizer(current).state}, vgs_state("vgs_v3_1.pt"),
        {"sigma": 0.001})
    src = tmp_path / "m.zip"
    make_containers.write_sb3(src, members)
    res = _migrate(src, tmp_path / "out.zip")
    assert [s.result.changed for s in res.states] == [False, True]
    assert zip_members(tmp_path / "out.zip")["data"] == zip_members(src)["data"]
