"""stable-baselines3 ``.zip`` files: optimizer and VGS members migrated, the rest kept as is.

Members: ``data`` (JSON; values shaped ``{":type:": ..., ":serialized:": ...}`` are cloudpickle
and are never unpickled, only carried as the JSON text they are), ``policy.pth``, one or more
``*optimizer*.pth``, ``vgs_state.pth``, ``pytorch_variables.pth``, ``_stable_baselines3_version``,
``system_info.txt``. A rewritten zip keeps every other member's bytes, name, date and compression,
and a ``<file>.sidecar.json`` beside it is rewritten with the new ``sha256`` and ``size``.
"""
from __future__ import annotations

import hashlib
import io as _io
import json
import zipfile
import zlib
from pathlib import Path
from typing import Any

from upgd_migrate.checkpoint import io
from upgd_migrate.checkpoint.formats.base import Checkpoint, Slot
from upgd_migrate.checkpoint.detect import FORMAT_KEY, is_optimizer_state, is_vgs_state

CONTAINER = "stable-baselines3 zip"
VGS_MEMBER = "vgs_state.pth"
KWARGS_KEY = "_optimizer_kwargs"
_SYNCED = ("sigma", "adaptive_noise", "instant_noise_scale")


def is_sb3_names(names: list[str]) -> bool:
    """A stable-baselines3 zip's members: a JSON ``data`` and no torch pickle."""
    return "data" in names and not any(n.endswith("/data.pkl") for n in names)


def _is_state_member(name: str) -> bool:
    return name.endswith(".pth") and ("optimizer" in name or name == VGS_MEMBER)


def _read_members(path: Path) -> list[tuple[zipfile.ZipInfo, bytes]]:
    try:
        with zipfile.ZipFile(path) as zf:
            return [(info, zf.read(info)) for info in zf.infolist()]
    except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, NotImplementedError,
            zlib.error) as e:  # CRC mismatch, truncation, encryption, odd compression
        raise io.CheckpointError(f"{path}: refused: a zip member cannot be read ({e})") from e


def open_zip(path: Path, allow_globals=()) -> Checkpoint:
    from upgd_migrate.checkpoint.formats.zipcheck import check_zip

    members = _read_members(path)
    # Refuse a broken data member or sidecar now, before a backup or an output exists.
    _sidecar(path)
    for info, data in members:
        if info.filename == "data":
            _json_object(data, f"{path}: refused: member data")
    slots = []
    for info, data in members:
        if not _is_state_member(info.filename):
            continue
        label = f"{path}:{info.filename}"
        if data.startswith(b"PK\x03\x04"):  # a torch zip inside the zip: same checks
            check_zip(_io.BytesIO(data), label)
        state = io.load_bytes(data, label, allow_globals)
        if is_optimizer_state(state):
            slots.append(Slot(info.filename, "optimizer", state, info.filename))
        elif is_vgs_state(state):
            slots.append(Slot(info.filename, "vgs", state, info.filename))
    return Checkpoint(path, CONTAINER, slots, members)


def _json_object(data: bytes, what: str) -> dict:
    """``data`` as a JSON object; anything else (a pickle, say) is refused, never unpickled."""
    try:
        doc = json.loads(data)
    except ValueError as e:  # UnicodeDecodeError and JSONDecodeError alike
        raise io.CheckpointError(f"{what} is not JSON ({e})") from e
    if not isinstance(doc, dict):
        raise io.CheckpointError(f"{what} is not a JSON object")
    return doc


def is_cloudpickled(value: Any) -> bool:
    return isinstance(value, dict) and ":serialized:" in value


def sync_data(data: bytes, optimizer_state: dict | None) -> tuple[bytes, list[str]]:
    """``data`` with ``_optimizer_kwargs`` agreeing with the migrated optimizer's first group.

    Only plain JSON is edited; a cloudpickled entry is left alone (and said so). Unchanged
    content keeps its exact bytes.
    """
    if optimizer_state is None:
        return data, []
    doc = _json_object(data, "member data")
    kwargs = doc.get(KWARGS_KEY)
    if is_cloudpickled(kwargs):
        return data, [f"{KWARGS_KEY} in data is cloudpickled: left as is (never unpickled); "
                      "set sigma/adaptive_noise in your training config"]
    if not isinstance(kwargs, dict) or "sigma" not in kwargs:
        return data, []
    group = optimizer_state["param_groups"][0]
    new = {**kwargs, **{k: group[k] for k in _SYNCED if k in group}}
    if new == kwargs:
        return data, []
    doc[KWARGS_KEY] = new
    shown = ", ".join(f"{k}={_show(new[k])}" for k in _SYNCED if k in new)
    return json.dumps(doc, indent=4).encode(), [f"data.{KWARGS_KEY}: {shown}"]


def _show(value: Any) -> str:
    """Six significant digits, as the group lines print sigma (the JSON keeps every digit)."""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _first_optimizer(ckpt: Checkpoint, states: list[dict]) -> dict | None:
    for slot, state in zip(ckpt.slots, states):
        if slot.kind != "optimizer" or state is slot.state:
            continue
        if FORMAT_KEY in state["param_groups"][0]:
            return state
    return None


def zip_bytes(ckpt: Checkpoint, states: list[dict]) -> tuple[bytes, list[str]]:
    replaced = {s.key: st for s, st in zip(ckpt.slots, states) if st is not s.state}
    notes: list[str] = []
    buf = _io.BytesIO()
    with zipfile.ZipFile(buf, "w") as out:
        for info, data in ckpt.root:
            if info.filename in replaced:
                data = io.save_bytes(replaced[info.filename])
            elif info.filename == "data":
                data, notes = sync_data(data, _first_optimizer(ckpt, states))
            out.writestr(info, data)
    return buf.getvalue(), notes


def sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + ".sidecar.json")


def _sidecar(path: Path) -> dict | None:
    """The sidecar's JSON, read before anything is written: a bad one stops the rewrite."""
    src = sidecar_path(path)
    if not src.is_file():
        return None
    try:
        meta = json.loads(src.read_bytes())
    except (OSError, ValueError) as e:
        raise io.CheckpointError(f"{path}: refused: sidecar {src.name} is not JSON ({e})") from e
    if not isinstance(meta, dict):
        raise io.CheckpointError(f"{path}: refused: sidecar {src.name} is not a JSON object")
    return meta


def write_zip(ckpt: Checkpoint, states: list[dict], out: Path) -> None:
    meta = _sidecar(ckpt.path)
    data, notes = zip_bytes(ckpt, states)
    ckpt.notes.extend(notes)
    io.write_bytes(out, data)
    if meta is not None:
        meta.update(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
        write_sidecar(out, meta)
        ckpt.notes.append(f"{sidecar_path(out).name}: sha256 and size updated")


def write_sidecar(out: Path, meta: dict) -> None:
    io.write_bytes(sidecar_path(out), (json.dumps(meta, indent=2) + "\n").encode())


def stale_sidecar(path: Path) -> dict | None:
    """The sidecar with the zip's real sha256 and size, when the one on disk disagrees.

    The zip and its sidecar are two atomic writes: a run interrupted between them leaves a
    migrated zip (which the next run finds current) beside the old sidecar. Only a sidecar
    that records sha256 or size is checked; None when it is right or absent.
    """
    meta = _sidecar(path)
    if meta is None or not {"sha256", "size"} & set(meta):
        return None
    data = path.read_bytes()
    fixed = {**meta, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    return fixed if fixed != meta else None
