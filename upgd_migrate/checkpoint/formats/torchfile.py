"""Torch files: raw states, training-loop dicts, Lightning ``.ckpt``, population-based training.

The states are searched by shape (:func:`~.base.find_states`); the container's name comes from
its marker keys. Loading is weights-only, through :mod:`upgd_migrate.checkpoint.io`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from upgd_migrate.checkpoint import io
from upgd_migrate.checkpoint.detect import is_optimizer_state, is_vgs_state
from upgd_migrate.checkpoint.formats.base import Checkpoint, Slot, _get, _label, find_states

# torch.save's legacy (non-zip) format opens with a protocol-2 pickle of this number
_LEGACY_HEAD = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")
ZIP_HEAD = b"PK\x03\x04"
TRAINING_LOOP_KEYS = ("optimizer", "optimizer_state_dict", "optimizer_state")
PBT_FORMATS = ("v2_full_parameters", "v1_policy_only")


def container_name(root: Any) -> str:
    if is_optimizer_state(root):
        return "optimizer state"
    if is_vgs_state(root):
        return "VGS state"
    if not isinstance(root, Mapping):
        return "torch file"
    if isinstance(root.get("optimizer_states"), list):
        return "Lightning checkpoint"
    if root.get("format_version") in PBT_FORMATS and isinstance(root.get("data"), Mapping):
        return "population-based-training file"
    if any(k in root for k in TRAINING_LOOP_KEYS):
        return "training-loop dict"
    return "torch file"



def _replace(obj: Any, path: tuple, value: Any) -> Any:
    """A copy of ``obj`` with the value at ``path`` replaced; only the spine is copied."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(obj, Mapping):
        new = type(obj)(obj) if isinstance(obj, dict) else dict(obj)  # keeps OrderedDict
        new[head] = _replace(obj[head], rest, value)
        return new
    items = list(obj)
    items[head] = _replace(items[head], rest, value)
    return type(obj)(items) if isinstance(obj, tuple) else items


def is_legacy_head(head: bytes) -> bool:
    return head.startswith(_LEGACY_HEAD)


def is_zip_names(names: list[str]) -> bool:
    """A torch zip: its pickle is ``<folder>/data.pkl`` (``data.pkl`` in very old writers)."""
    return any(n == "data.pkl" or n.endswith("/data.pkl") for n in names)


def first_member(head: bytes) -> str:
    """The name of a zip's first member, from its local header (readable when the end of the
    file is lost: a truncated torch zip is still known as one)."""
    if not head.startswith(ZIP_HEAD) or len(head) < 30:
        return ""
    n = int.from_bytes(head[26:28], "little")
    return head[30:30 + n].decode("utf-8", "replace")


def state_keys_named(pickled: bytes) -> bool:
    """Whether a pickle (read by opcodes, never run) names the keys of an optimizer or VGS
    state: a file that does not cannot hold one. A pickle that cannot be read says yes."""
    import io as _io
    import pickletools

    from upgd_migrate.checkpoint.detect import VGS_KEYS

    if b"param_groups" in pickled:  # no need to walk it: the file is loaded, then decided
        return True
    strings: set[str] = set()
    buf = _io.BytesIO(pickled)
    try:
        for _ in range(4):  # the legacy format is four pickles in a row; a zip's is one
            if buf.tell() >= len(pickled):
                break
            for _op, arg, _pos in pickletools.genops(buf):
                if isinstance(arg, str):
                    strings.add(arg)
    except Exception:  # cut short or malformed: it might name them further on
        return True
    return "param_groups" in strings or VGS_KEYS <= strings


def open(path: Path, allow_globals=(), zip_names=None) -> Checkpoint:  # noqa: A001
    """``zip_names``: the zip's members, where the caller has read its directory already."""
    # memory-mapped as io.load decides it: a pickle in the zip's folder
    zipped = (any(n.endswith("/data.pkl") for n in zip_names) if zip_names is not None
              else None)
    root = io.load(path, allow_globals, zipped)
    slots = [Slot(_label(p), kind, _get(root, p), p) for p, kind in find_states(root)]
    return Checkpoint(path, container_name(root), slots, root)


def write(ckpt: Checkpoint, states: list[dict], out: Path) -> None:
    root = ckpt.root
    for slot, state in zip(ckpt.slots, states):
        if state is not slot.state:
            root = _replace(root, slot.key, state)
    io.save(root, out)
