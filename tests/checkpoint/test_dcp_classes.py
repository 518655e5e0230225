"""The stand-in DCP classes: torch's fields and pickled bytes, read back by torch as torch's own
objects, and a DCP run migrated without importing torch.distributed.checkpoint."""
from __future__ import annotations

import dataclasses
import json
import pickle
import subprocess
import sys

import pytest
import torch
from torch.distributed.checkpoint import filesystem as fs
from torch.distributed.checkpoint import metadata as md

from dcp_helpers import metadata, resume, save_legacy
from upgd_migrate.checkpoint.formats import dcp_classes as ours
from upgd_migrate.checkpoint.formats.dcp_meta import unpickle_metadata
from upgd_migrate.cli import main

PAIRS = [(getattr(ours, n), getattr(md, n)) for n in (
    "ChunkStorageMetadata", "TensorProperties", "TensorStorageMetadata", "BytesStorageMetadata",
    "StorageMeta", "Metadata", "MetadataIndex")] + [(ours.StorageInfo, fs._StorageInfo)]


@pytest.mark.parametrize("mine, theirs", PAIRS, ids=[p[1].__name__ for p in PAIRS])
def test_fields_defaults_and_names_are_torchs(mine, theirs):
    def shape(cls):
        return [(f.name, f.default, f.default_factory, f.hash, f.compare)
                for f in dataclasses.fields(cls)]
    assert shape(mine) == shape(theirs)
    assert ours.TORCH_NAMES[mine] == (theirs.__module__, theirs.__qualname__)
    members = {m.name: m.value for m in ours._MEM_FORMAT_ENCODING}
    assert members == {m.name: m.value for m in md._MEM_FORMAT_ENCODING}


def _metadata(m, info, props=None):
    props = props or m.TensorProperties
    sdm = {"a": m.TensorStorageMetadata(
               props(dtype=torch.float16, memory_format=torch.channels_last),
               torch.Size([2, 3]), [m.ChunkStorageMetadata(torch.Size([0, 0]),
                                                           torch.Size([2, 3]))]),
           "b": m.BytesStorageMetadata(),
           "c": m.TensorStorageMetadata(props(), torch.Size([]), [])}
    storage = {m.MetadataIndex("a", [0, 0], index=1): info("__0_0.distcp", 0, 24),
               m.MetadataIndex("b"): info("__0_0.distcp", 24, 10, ["zstd"])}
    return m.Metadata(sdm, {"a": ("a",), "b": ("b", 0)}, storage,
                      m.StorageMeta("ck", "save", None, ["x"]), "1.0.0")


def test_same_bytes_as_torchs_own_pickle_both_ways():
    real = pickle.dumps(_metadata(md, fs._StorageInfo))
    assert ours.dumps(_metadata(ours, ours.StorageInfo)) == real
    assert ours.dumps(unpickle_metadata(real, "x")) == real
    assert pickle.loads(real) == _metadata(md, fs._StorageInfo)


def test_torch_21s_tensor_properties_keep_their_names():
    old_md = pytest.importorskip("torch.distributed._shard.sharded_tensor.metadata")
    real = pickle.dumps(_metadata(md, fs._StorageInfo, old_md.TensorProperties))
    read = unpickle_metadata(real, "x")
    assert read.state_dict_metadata["a"].properties.memory_format == torch.channels_last
    assert ours.dumps(read) == real


def test_a_bad_memory_format_encoding_is_refused():
    props = ours.TensorProperties()
    with pytest.raises(RuntimeError, match="encoding"):
        props.__setstate__((torch.float32, torch.strided, False, 0, False))
    props.memory_format = torch.sparse_coo
    with pytest.raises(RuntimeError, match="memory_format"):
        props.__getstate__()


def test_written_metadata_is_what_torch_pickles_and_loads(tmp_path):
    save_legacy(tmp_path / "ck", vgs="vgs_v2_0.pt")
    assert main(["checkpoint", str(tmp_path / "ck"), "-o", str(tmp_path / "out")]) == 1
    written = (tmp_path / "out" / ".metadata").read_bytes()
    real = metadata(tmp_path / "out")  # torch's classes, through pickle.load (trusted here)
    assert isinstance(real.storage_data[md.MetadataIndex("vgs.legacy_statistics.param_grad_mean_ema",
                                                          [0])], fs._StorageInfo)
    assert pickle.dumps(real) == written
    model, opt = resume(tmp_path / "out")
    assert opt.state_dict()["param_groups"][0]["adaptive_noise"] is True


PROBE = """
import json, sys
from upgd_migrate.cli import main
codes = []
for args in sys.argv[1:]:
    try:
        codes.append(main(json.loads(args)))
    except SystemExit as e:
        codes.append(e.code)
print(json.dumps([codes, 'torch.distributed.checkpoint' in sys.modules]))
"""


def test_a_dcp_run_never_imports_torch_distributed_checkpoint(tmp_path):
    save_legacy(tmp_path / "run" / "ck")
    run, out = str(tmp_path / "run"), str(tmp_path / "out")
    calls = [["checkpoint", "inspect", run], ["checkpoint", run, "--check"],
             ["checkpoint", run, "-o", out, "--sigma-ratio", "0.005", "--jobs", "1"],
             ["checkpoint", run, "-o", out + "2", "--jobs", "1"], ["verify", out, "--steps", "4"]]
    done = subprocess.run([sys.executable, "-c", PROBE, *map(json.dumps, calls)],
                          capture_output=True, text=True, timeout=180)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [[0, 1, 1, 1, 0], False], (
        done.stdout + done.stderr)
