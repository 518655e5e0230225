"""The torch zip rewrite: torch.save's bytes exactly, the kept tensors copied from the original."""
from __future__ import annotations

import collections
import zipfile

import pytest
import torch
from ckpt_helpers import FIXTURES, OPTIM, VGS, assert_same, make_containers

from upgd_migrate.checkpoint import io
from upgd_migrate.checkpoint.formats import open_checkpoint, torchzip, write_checkpoint
from upgd_migrate.checkpoint.formats.torchfile import _replace
from upgd_migrate.checkpoint.pipeline import migrate_checkpoint
from upgd_migrate.checkpoint.steps import Context


def _original(tmp_path):
    gen = torch.Generator().manual_seed(0)
    obj = {"w": torch.randn(300, generator=gen), "steps": torch.arange(7),
           "half": torch.randn(5, generator=gen).to(torch.bfloat16), "empty": torch.zeros(0),
           "groups": collections.OrderedDict(lr=0.1, sigma=0.001), "n": 3}
    obj["view"] = obj["w"][10:20]  # shares w's storage: one record for both
    path = tmp_path / "in.pt"
    torch.save(obj, path)
    return path


def _members(path):
    with zipfile.ZipFile(path) as zf:
        return {i.filename.partition("/")[2]: zf.read(i) for i in zf.infolist()}


def test_writes_exactly_what_torch_save_writes_copying_the_kept_records(tmp_path):
    src = _original(tmp_path)
    root = io.load(src)  # memory-mapped
    after = {**root, "groups": collections.OrderedDict(lr=0.1, sigma=0.05, stamp=2),
             "new": torch.ones(4), "steps": root["steps"] + 1}  # a step made new tensors
    del after["half"]  # the keys move: records are renamed, not rewritten
    out = tmp_path / "out.pt"
    assert torchzip.rewrite(src, after, out)
    assert out.read_bytes() == io.save_bytes(after)
    records = torchzip.plan(src, after)
    copied = {r.name for r in records if r.data is None}
    assert len(copied) == 1  # w (and its view); empty, new and steps+1 come from memory
    old, new = _members(src), _members(out)
    assert [new[f"data/{n.rpartition('/')[2]}"] for n in copied] == [old["data/0"]]
    for mmap in (False, True):
        assert_same(torch.load(out, weights_only=True, mmap=mmap), after)


def test_nothing_mapped_from_the_file_is_left_to_torch(tmp_path):
    src = _original(tmp_path)
    in_memory = torch.load(src, weights_only=True)  # not memory-mapped: nothing to copy
    assert torchzip.plan(src, in_memory) is None
    assert not torchzip.rewrite(src, in_memory, tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()


def test_a_legacy_file_is_left_to_torch(tmp_path):
    src = tmp_path / "legacy.pt"
    torch.save({"w": torch.ones(3)}, src, _use_new_zipfile_serialization=False)
    assert not torchzip.rewrite(src, io.load(src), tmp_path / "out.pt")
    assert list(tmp_path.iterdir()) == [src]


def test_another_byte_order_is_left_to_torch(tmp_path):
    src = _original(tmp_path)
    bad = tmp_path / "big.pt"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(bad, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            zout.writestr(info, b"big" if info.filename.endswith("/byteorder") else data)
    assert torchzip._members(bad) is None


def test_an_archive_of_4_gib_is_left_to_torch():
    huge = torchzip.Record("data/0", 1 << 32, 0, None, 64)
    with pytest.raises(ValueError, match="ZIP64"):
        torchzip.layout([huge], 64)


@pytest.mark.parametrize("name", [*(f"optim/{n}" for n in OPTIM), *(f"vgs/{n}" for n in VGS)])
def test_every_fixture_migrates_to_the_bytes_torch_save_writes(tmp_path, name, monkeypatch):
    src = tmp_path / "in.pt"
    src.write_bytes((FIXTURES / name).read_bytes())
    outs, used = [], []
    real = torchzip.rewrite

    def spy(*args):
        used.append(real(*args))
        return used[-1]

    for fast in (True, False):
        monkeypatch.setattr(torchzip, "rewrite", spy if fast else lambda *a: False)
        ckpt = open_checkpoint(src)
        states = [s.result.state for s in migrate_checkpoint(ckpt, Context())]
        outs.append(tmp_path / f"out-{fast}.pt")
        write_checkpoint(ckpt, states, outs[-1])
    # the fast way wrote the first, unless the file holds no tensor (a v1 VGS state)
    assert used == [name != "vgs/vgs_v1.pt"]
    assert outs[0].read_bytes() == outs[1].read_bytes()


def test_a_lightning_checkpoint_copies_its_weights_and_writes_new_vgs_zeros(tmp_path):
    src = tmp_path / "model.ckpt"
    optim = torch.load(FIXTURES / "optim" / "adaptive_upgd_g1.pt", weights_only=True)
    vgs = torch.load(FIXTURES / "vgs" / "vgs_v2_0.pt", weights_only=True)
    torch.save(make_containers.build_lightning(optim, vgs), src)
    ckpt = open_checkpoint(src)
    states = [s.result.state for s in migrate_checkpoint(ckpt, Context(sigma_ratio=0.01))]
    root = ckpt.root
    for slot, state in zip(ckpt.slots, states):
        root = _replace(root, slot.key, state)
    records = torchzip.plan(src, root)
    assert sum(r.data is None for r in records) > sum(r.data is not None and
                                                      r.name.startswith("data/")
                                                      for r in records) > 0
    write_checkpoint(ckpt, states, tmp_path / "out.ckpt")
    assert (tmp_path / "out.ckpt").read_bytes() == io.save_bytes(root)
