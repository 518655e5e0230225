"""Broken DCP folders: one line naming the folder or file and what is wrong, exit 2, nothing
written, the folder byte-identical afterwards."""
from __future__ import annotations

import re
import shutil

import pytest
import torch
from torch.distributed.checkpoint.metadata import ChunkStorageMetadata, MetadataIndex

from dcp_helpers import metadata, save_legacy, write_metadata
from upgd_migrate.checkpoint.runfolder import discover
from upgd_migrate.cli import main

KEY = "model.body.weight"  # 16 x 6


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _chunks(folder, boxes):
    """Give KEY these (offsets, sizes) chunks, each pointing at its one stored copy."""
    md = metadata(folder)
    info = md.storage_data.pop(MetadataIndex(KEY, [0, 0]))
    md.state_dict_metadata[KEY].chunks = [
        ChunkStorageMetadata(torch.Size(o), torch.Size(s)) for o, s in boxes]
    for o, _ in boxes:
        md.storage_data[MetadataIndex(KEY, o)] = info
    write_metadata(folder, md)


def _missing_data_file(folder):
    (folder / "__0_0.distcp").unlink()
    return f"{folder}: data file __0_0.distcp named in .metadata is missing"


def _truncated_metadata(folder):
    raw = (folder / ".metadata").read_bytes()
    (folder / ".metadata").write_bytes(raw[:len(raw) // 2])
    return re.compile(re.escape(f"{folder}/.metadata: truncated or corrupt (") + ".+\\)")


def _empty_metadata(folder):
    (folder / ".metadata").write_bytes(b"")
    return f"{folder}/.metadata: truncated or corrupt (EOFError: Ran out of input)"


def _truncated_data_file(folder):
    data = folder / "__0_0.distcp"
    size = data.stat().st_size
    data.write_bytes(data.read_bytes()[:size - 5000])
    return re.compile(re.escape(f"{folder}/__0_0.distcp: entry ") + r"\S+ is stored at bytes "
                      + r"\d+\.\.\d+" + re.escape(f", but the file has only {size - 5000} bytes"))


def _offset_beyond_the_file(folder):
    md = metadata(folder)
    info = md.storage_data[MetadataIndex(KEY, [0, 0])]
    info.offset = 10**9
    write_metadata(folder, md)
    return (f"{folder}/__0_0.distcp: entry {KEY} is stored at bytes 1000000000.."
            f"{10**9 + info.length}, but the file has only "
            f"{(folder / '__0_0.distcp').stat().st_size} bytes")


def _overlapping_chunks(folder):
    _chunks(folder, [([0, 0], [10, 6]), ([8, 0], [8, 6])])
    return f"{folder}/.metadata: entry {KEY}: chunks at [0, 0] and [8, 0] overlap"


def _chunks_not_covering(folder):
    _chunks(folder, [([0, 0], [8, 6])])
    return (f"{folder}/.metadata: entry {KEY}: its chunks hold 48 of 96 elements (they do not "
            "cover the tensor)")


def _chunk_outside(folder):
    _chunks(folder, [([0, 0], [8, 6]), ([10, 0], [8, 6])])
    return (f"{folder}/.metadata: entry {KEY}: chunk at [10, 0] of size [8, 6] lies outside the "
            "tensor's size [16, 6]")


def _path_outside_the_folder(folder):
    md = metadata(folder)
    md.storage_data[MetadataIndex(KEY, [0, 0])].relative_path = "../elsewhere.distcp"
    write_metadata(folder, md)
    return (f"{folder}/.metadata: entry {KEY}: data file '../elsewhere.distcp' is not a file "
            "name inside the folder")


def _not_metadata(folder):
    (folder / ".metadata").write_bytes(__import__("pickle").dumps({"a": 1}))
    return f"{folder}/.metadata: not DCP metadata (a dict)"


CASES = [_missing_data_file, _truncated_metadata, _empty_metadata, _truncated_data_file,
         _offset_beyond_the_file, _overlapping_chunks, _chunks_not_covering, _chunk_outside,
         _path_outside_the_folder, _not_metadata]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dcp") / "ck"
    save_legacy(folder)
    return folder


@pytest.mark.parametrize("break_it", CASES, ids=lambda f: f.__name__.strip("_"))
@pytest.mark.parametrize("command", [["checkpoint", "inspect"], ["checkpoint", "--in-place"],
                                     ["checkpoint", "-o", "OUT"], ["verify"]])
def test_bad_folder_one_line_exit_2_nothing_written(tmp_path, pristine, capsys, break_it,
                                                    command):
    folder = tmp_path / "ck"
    shutil.copytree(pristine, folder)
    expected = break_it(folder)
    before = _snapshot(folder)
    argv = [a.replace("OUT", str(tmp_path / "out")) for a in command]
    assert main([*argv[:2], str(folder), *argv[2:]] if argv[0] == "checkpoint" and
                argv[1] == "inspect" else [argv[0], str(folder), *argv[1:]]) == 2
    errors = [ln for ln in capsys.readouterr().err.splitlines()
              if ln.startswith(str(folder))]
    assert len(errors) == 1, errors
    if isinstance(expected, str):
        assert errors[0] == expected
    else:
        assert expected.fullmatch(errors[0]), errors[0]
    assert _snapshot(folder) == before
    assert not (tmp_path / "out").exists()


def test_a_folder_without_metadata_is_an_ordinary_folder(tmp_path, pristine):
    plain = tmp_path / "plain"
    plain.mkdir()
    shutil.copy(pristine / "__0_0.distcp", plain)
    assert discover([plain]) == []
