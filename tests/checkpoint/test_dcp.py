"""DCP folders: found by their keys under any top-level name, migrated by the same registry as a
single file, written as changed entries only, and loaded back by torch's own ``dcp.load``."""
from __future__ import annotations

import os
import shutil

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import _version
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

from ckpt_helpers import FIXTURES, assert_same, optim_state, vgs_state
from dcp_helpers import Net, metadata, resume, save_legacy
from upgd_migrate.checkpoint import io
from upgd_migrate.checkpoint.formats import open_checkpoint
from upgd_migrate.checkpoint.inspect import inspect_file
from upgd_migrate.checkpoint.steps import migrate_optimizer, migrate_vgs
from upgd_migrate.checkpoint.pipeline import migrate_checkpoint
from upgd_migrate.checkpoint.runfolder import discover
from upgd_migrate.cli import main

G1 = FIXTURES / "optim" / "adaptive_upgd_g1.pt"


def _files(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.name != ".metadata"}


def _single_file_group(fixture: str = "adaptive_upgd_g1.pt") -> dict:
    group = migrate_optimizer(optim_state(fixture)).state["param_groups"][0]
    return {k: v for k, v in group.items() if k != "params"}


@pytest.mark.parametrize("top", ["optim", "optimizer", "trainer_opt"])
@pytest.mark.parametrize("flat", [False, True])
def test_inspect_finds_the_optimizer_by_its_keys(tmp_path, top, flat):
    save_legacy(tmp_path / "ck", flat=flat, top=top)
    doc = inspect_file(tmp_path / "ck")
    assert doc["container"] == "DCP checkpoint"
    assert [(s["where"], s["class"], s["generation"]) for s in doc["states"]] == [
        (top, "AdaptiveUPGD", "G1")]
    assert doc["states"][0]["groups"][0]["params"] == 6
    assert doc["size"] == sum(p.stat().st_size for p in (tmp_path / "ck").iterdir())


@pytest.mark.parametrize("flat", [False, True])
def test_same_migration_as_a_single_file(tmp_path, flat):
    save_legacy(tmp_path / "ck", flat=flat)
    ckpt = open_checkpoint(tmp_path / "ck")
    (res,) = migrate_checkpoint(ckpt, __import__("upgd_migrate.checkpoint.steps",
                                                 fromlist=["Context"]).Context())
    single = migrate_optimizer(optim_state("adaptive_upgd_g1.pt"))
    assert res.result.applied == single.applied
    assert [n.text for n in res.result.notes] == [n.text for n in single.notes]
    group = {k: v for k, v in res.result.state["param_groups"][0].items() if k != "params"}
    assert group == _single_file_group()


@pytest.mark.parametrize("flat", [False, True])
def test_in_place_writes_one_small_file_and_loads_with_dcp_load(tmp_path, flat):
    folder = tmp_path / "ck"
    model = save_legacy(folder, flat=flat)
    before = _files(folder)
    assert main(["checkpoint", str(folder), "--in-place"]) == 1
    after = _files(folder)
    assert {k: v for k, v in after.items() if k in before} == before  # byte-identical
    (new,) = set(after) - set(before)
    assert new == "__upgd_migrate_0.distcp"
    md = metadata(folder)
    written = {i.fqn for i, s in md.storage_data.items() if s.relative_path == new}
    assert written and all(".param_groups." in k for k in written)  # group options only
    resumed, opt = resume(folder, flat)
    expected = _single_file_group()
    # dcp.load fills the keys the live optimizer has: the audit log stays in the checkpoint
    assert expected.pop("upgd_migrate_audit")["applied"] == [
        "optim.fill-group-keys", "optim.adaptive-noise", "optim.stamp-format"]
    for group in opt.param_groups:
        assert {k: group[k] for k in expected} == expected
    saved = optim_state("adaptive_upgd_g1.pt")
    for i, p in enumerate(resumed.parameters()):
        assert_same(opt.state[p]["first_moment"], saved["state"][i]["first_moment"])
    for a, b in zip(resumed.parameters(), model.parameters()):
        assert torch.equal(a, b)
    assert main(["checkpoint", str(folder), "--check"]) == 0  # a second run has nothing to do


def test_output_is_a_complete_new_folder(tmp_path):
    src, out = tmp_path / "ck", tmp_path / "out"
    save_legacy(src)
    before = {p.name: p.read_bytes() for p in src.iterdir()}
    assert main(["checkpoint", str(src), "-o", str(out)]) == 1
    assert {p.name: p.read_bytes() for p in src.iterdir()} == before
    assert sorted(p.name for p in out.iterdir()) == [".metadata", "__0_0.distcp",
                                                     "__upgd_migrate_0.distcp"]
    assert os.stat(out / "__0_0.distcp").st_ino != os.stat(src / "__0_0.distcp").st_ino
    shutil.rmtree(src)  # the new folder stands alone
    _, opt = resume(out)
    assert opt.param_groups[0]["sigma"] == _single_file_group()["sigma"]
    # torch's own reader, every entry (the model's too)
    dcp_to_torch_save(str(out), str(tmp_path / "all.pt"))
    whole = torch.load(tmp_path / "all.pt", weights_only=True)
    assert whole["optim"]["param_groups"][0]["adaptive_noise"] is True


def test_output_into_an_existing_folder_goes_inside_it_like_cp(tmp_path):
    save_legacy(tmp_path / "ck")
    (tmp_path / "out").mkdir()
    assert main(["checkpoint", str(tmp_path / "ck"), "-o", str(tmp_path / "out")]) == 1
    assert inspect_file(tmp_path / "out" / "ck")["states"][0]["generation"] == "current"


def test_output_over_a_non_empty_folder_is_refused(tmp_path, capsys):
    save_legacy(tmp_path / "ck")
    (tmp_path / "out" / "ck").mkdir(parents=True)
    (tmp_path / "out" / "ck" / "keep.txt").write_text("x")
    assert main(["checkpoint", str(tmp_path / "ck"), "-o", str(tmp_path / "out")]) == 2
    assert (f"{tmp_path}/out/ck: exists and is not an empty folder: not overwritten"
            in capsys.readouterr().err)
    assert [p.name for p in (tmp_path / "out" / "ck").iterdir()] == ["keep.txt"]
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]


def test_plain_state_dict_layout_integer_ids(tmp_path):
    """``dcp.save({"optimizer": opt.state_dict()})``: keys optimizer.state.0.<key>."""
    sd = optim_state("adaptive_upgd_g1.pt")
    dcp.save({"model": Net().state_dict(), "optimizer": sd}, checkpoint_id=str(tmp_path / "ck"))
    assert "optimizer.state.0.first_moment" in metadata(tmp_path / "ck").state_dict_metadata
    (res,) = migrate_checkpoint(open_checkpoint(tmp_path / "ck"),
                                __import__("upgd_migrate.checkpoint.steps",
                                           fromlist=["Context"]).Context())
    assert {k: v for k, v in res.result.state["param_groups"][0].items()
            if k != "params"} == _single_file_group()


def test_torch_2_3_layout_param_groups_as_one_entry(tmp_path):
    """Before torch 2.4, DCP kept ``optim.param_groups`` whole: one bytes entry."""
    model = Net()
    from dcp_helpers import legacy
    from torch.distributed.checkpoint.state_dict import get_state_dict

    msd, osd = get_state_dict(model, legacy(model))
    _version._derived_version = "2_3"
    try:
        dcp.save({"model": msd, "optim": osd}, checkpoint_id=str(tmp_path / "ck"))
    finally:
        _version._derived_version = None
    keys = metadata(tmp_path / "ck").state_dict_metadata
    assert "optim.param_groups" in keys and "optim.param_groups.0.lr" not in keys
    assert main(["checkpoint", str(tmp_path / "ck"), "--in-place"]) == 1
    keys = metadata(tmp_path / "ck").state_dict_metadata
    assert "optim.param_groups" in keys and "optim.param_groups.0.sigma" not in keys
    _, opt = resume(tmp_path / "ck")
    assert opt.param_groups[0]["sigma"] == _single_file_group()["sigma"]


def test_vgs_state_migrates_and_moved_tensors_keep_their_bytes(tmp_path):
    folder = tmp_path / "ck"
    save_legacy(folder, vgs="vgs_v2_0.pt")
    old = metadata(folder)
    assert main(["checkpoint", str(folder), "--in-place"]) == 1
    md = metadata(folder)
    moved = md.storage_data[_index("vgs.legacy_statistics.param_grad_mean_ema", [0])]
    assert moved == old.storage_data[_index("vgs.param_grad_mean_ema", [0])]
    dcp_to_torch_save(str(folder), str(tmp_path / "all.pt"))
    whole = torch.load(tmp_path / "all.pt", weights_only=True)
    expected = migrate_vgs(vgs_state("vgs_v2_0.pt")).state
    assert_same({k: whole["vgs"][k] for k in expected}, expected)


def _index(key, offsets):
    from torch.distributed.checkpoint.metadata import MetadataIndex

    return MetadataIndex(key, offsets)


def test_model_weights_and_utilities_are_never_read(tmp_path, monkeypatch):
    save_legacy(tmp_path / "ck")
    read = []
    real = io.load_slice

    def spy(path, offset, length, label, allow_globals=()):
        read.append(label.rsplit("entry ", 1)[1])
        return real(path, offset, length, label, allow_globals)

    monkeypatch.setattr(io, "load_slice", spy)
    assert main(["checkpoint", str(tmp_path / "ck"), "--in-place"]) == 1
    assert not [k for k in read if k.startswith("model.") or k.endswith("avg_utility")]
    assert sorted(k for k in read if k.endswith("moment")) == sorted(
        f"optim.state.{m}.{w}.{k}" for m in ("body", "pi", "v") for w in ("weight", "bias")
        for k in ("first_moment", "sec_moment"))


def test_backup_keeps_the_old_metadata(tmp_path):
    folder = tmp_path / "ck"
    save_legacy(folder)
    old = (folder / ".metadata").read_bytes()
    assert main(["checkpoint", str(folder), "--in-place", "--backup", ".bak"]) == 1
    assert (folder / ".metadata.bak").read_bytes() == old
    # restoring it gives the old checkpoint back: its data files were never touched
    os.replace(folder / ".metadata.bak", folder / ".metadata")
    assert inspect_file(folder)["states"][0]["generation"] == "G1"


def test_a_dcp_folder_is_one_checkpoint_when_walking(tmp_path):
    save_legacy(tmp_path / "runs" / "step-100")
    shutil.copy(G1, tmp_path / "runs" / "g1.pt")
    (tmp_path / "runs" / "plain").mkdir()
    shutil.copy(tmp_path / "runs" / "step-100" / "__0_0.distcp", tmp_path / "runs" / "plain")
    found = [str(rel) for _, rel in discover([tmp_path / "runs"])]
    assert found == ["g1.pt", "step-100"]
    assert [str(rel) for _, rel in discover([tmp_path / "runs" / "step-100"])] == ["step-100"]


def test_a_current_dcp_folder_gets_a_copied_counterpart_under_output(tmp_path):
    save_legacy(tmp_path / "runs" / "step-100")
    assert main(["checkpoint", str(tmp_path / "runs" / "step-100"), "--in-place"]) == 1
    current = _files(tmp_path / "runs" / "step-100")
    assert main(["checkpoint", str(tmp_path / "runs"), "-o", str(tmp_path / "out")]) == 0
    copy = tmp_path / "out" / "step-100"
    assert _files(copy) == current and (copy / ".metadata").is_file()
    # copies, not hard links: a later dcp.save into OUT must not reach the input
    assert all(p.stat().st_nlink == 1 for p in copy.iterdir())
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]


def test_verify_and_calibrate_from_accept_a_folder(tmp_path, capsys):
    from upgd_migrate.config.calibration import calibrated_policy

    save_legacy(tmp_path / "ck")
    policy = calibrated_policy(str(tmp_path / "ck"))
    assert policy.ratio == calibrated_policy(str(G1)).ratio
    assert main(["checkpoint", str(tmp_path / "ck"), "--in-place", "--verify"]) == 1
    assert main(["verify", str(tmp_path / "ck")]) == 0
    assert "1 state verified in 1 file: 0 failed" in capsys.readouterr().err


def test_a_failure_before_the_metadata_replace_leaves_the_old_checkpoint(tmp_path, monkeypatch):
    from upgd_migrate.checkpoint.formats import dcp_write

    folder = tmp_path / "ck"
    save_legacy(folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    def crash(path):  # the data file is durable by now; .metadata is next
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(dcp_write, "atomic_writer", crash)
    assert main(["checkpoint", str(folder), "--in-place"]) == 2
    after = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert set(after) == set(before) | {"__upgd_migrate_0.distcp"}  # unreferenced, harmless
    assert {k: after[k] for k in before} == before
    assert inspect_file(folder)["states"][0]["generation"] == "G1"
    monkeypatch.undo()
    assert main(["checkpoint", str(folder), "--in-place"]) == 1  # next name, old file unused
    assert "__upgd_migrate_1.distcp" in {p.name for p in folder.iterdir()}
    _, opt = resume(folder)
    assert opt.param_groups[0]["adaptive_noise"] is True


def test_lazy_entries_copy_handles_and_read_on_access(tmp_path):
    from upgd_migrate.checkpoint.formats.dcp import LazyEntry, TensorRef

    save_legacy(tmp_path / "ck")
    state = open_checkpoint(tmp_path / "ck").slots[0].state
    entry = state["state"]["body.weight"]
    assert isinstance(entry, LazyEntry)
    copied = {**entry, "noise_scale_steps": 1}  # what a step adding a key does
    assert isinstance(copied["first_moment"], TensorRef)
    assert copied["first_moment"] is dict.__getitem__(entry, "first_moment")
    saved = optim_state("adaptive_upgd_g1.pt")["state"][0]
    assert_same(entry["first_moment"], saved["first_moment"])
    assert dict.__getitem__(entry, "avg_utility").numel() == 96


def test_single_files_do_not_import_torch_distributed_checkpoint():
    """That import takes seconds: only a DCP folder pays for it."""
    import subprocess
    import sys

    probe = ("import sys\n"
             "from upgd_migrate.checkpoint.pipeline import Options, WriteBack, process\n"
             f"process(__import__('pathlib').Path({str(G1)!r}), None, Options(WriteBack.CHECK))\n"
             "print('torch.distributed.checkpoint' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.strip() == "False"
