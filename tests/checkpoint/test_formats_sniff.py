"""formats.sniff: what a file is, from its first bytes and a zip's directory only."""
from __future__ import annotations

import io as _io
import json
import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from ckpt_helpers import FIXTURES, optim_state
from upgd_migrate.checkpoint import io
from upgd_migrate.checkpoint.formats import sniff
from upgd_migrate.checkpoint.formats.torchfile import state_keys_named

G1 = FIXTURES / "optim" / "adaptive_upgd_g1.pt"


def test_each_kind_of_file(tmp_path):
    torch.save({"a": 1}, tmp_path / "legacy.bin", _use_new_zipfile_serialization=False)
    save_file({"w": torch.ones(2)}, str(tmp_path / "model.safetensors"))
    (tmp_path / "params.pkl").write_bytes(pickle.dumps({"lr": 1}))
    (tmp_path / "result.json").write_text(json.dumps({"loss": 1}))
    (tmp_path / "broken.pt").write_bytes(b"garbage")
    (tmp_path / "truncated.bin").write_bytes(G1.read_bytes()[:200])  # the end record lost
    (tmp_path / "data.distcp").write_bytes(G1.read_bytes() * 2)  # DCP data: zips in a row
    got = {p.name: sniff(p) for p in sorted(tmp_path.iterdir())}
    assert got == {"broken.pt": "torch", "data.distcp": "zip", "legacy.bin": "torch",
                   "model.safetensors": "safetensors", "params.pkl": "pickle",
                   "result.json": "file", "truncated.bin": "torch"}
    assert sniff(FIXTURES / "containers" / "ppo.zip") == "sb3"


def test_a_pickle_names_the_keys_of_a_state_or_not():
    assert state_keys_named(pickle.dumps({"param_groups": []}))
    assert not state_keys_named(pickle.dumps({"warmup_steps": 3, "lr": 1e-4}))
    for obj, named in (({"a": torch.ones(3)}, False), (optim_state("adaptive_upgd_g1.pt"), True)):
        buf = _io.BytesIO()  # torch's legacy format: four pickles, then the storages
        torch.save(obj, buf, _use_new_zipfile_serialization=False)
        assert state_keys_named(buf.getvalue()) is named
        assert state_keys_named(buf.getvalue()[:40])  # cut short: it might, so not carried


def test_numpy_data_loads_by_default_and_object_arrays_are_refused_by_every_name(tmp_path):
    torch.save({"numpy": np.random.get_state(), "f": np.ones(2, np.float32)}, tmp_path / "a.pt")
    assert io.load(tmp_path / "a.pt")["numpy"][0] == "MT19937"
    torch.save({"o": np.array([None], dtype=object)}, tmp_path / "b.pt")
    with pytest.raises(io.UnsafeCheckpointError) as e:
        io.load(tmp_path / "b.pt")
    assert "numpy.dtypes.ObjectDType" in e.value.names
