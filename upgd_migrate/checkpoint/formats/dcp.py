"""DCP folders (``torch.distributed.checkpoint``): ``.metadata`` + data files, one checkpoint.

The flattened keys are put back into the nested shape they were saved from (the planner's
recorded paths), so ``optim.state.<fqn>.<key>`` / ``optim.param_groups.<i>.<key>`` become an
ordinary optimizer state under ``optim``, whatever the top level is called. Optimizers saved with
``get_state_dict(..., flatten_optimizer_state_dict=True)`` (``state.<fqn>.<key>``,
``param_groups.<fqn>.<key>``) are reassembled into ``state`` + ``param_groups``. The migration
registry then sees the same shapes as for a single file.

Nothing is read that the migration does not use: model weights stay :class:`TensorRef` handles,
optimizer tensors are read one at a time when a step looks at them (and dropped after), and only
the ``torch.save``d values a state can be made of (under a ``state`` or ``param_groups`` key, or
a VGS option) are deserialized up front. Every other bytes entry (torchtitan's ``train_state``,
a dataloader's state) is a :class:`BytesRef`: carried as it is, never deserialized, so it needs
no ``--allow-global``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch

from upgd_migrate.checkpoint import io
from upgd_migrate.checkpoint.detect import VGS_KEYS, is_optimizer_state
from upgd_migrate.checkpoint.formats.base import DCP_CONTAINER
from upgd_migrate.checkpoint.formats.dcp_meta import Entry, Index, is_dcp_folder, read_index

CONTAINER = DCP_CONTAINER
_STATE_PARTS = ("state", "param_groups")

__all__ = ["CONTAINER", "TensorRef", "LazyEntry", "DcpRoot", "is_dcp_folder", "open_dcp",
           "materialize"]


class TensorRef:
    """A tensor entry not read yet: dtype and shape from the metadata, data on :meth:`load`."""

    def __init__(self, index: Index, entry: Entry, allow_globals: Sequence[str] = ()) -> None:
        self.index, self.entry, self.allow_globals = index, entry, tuple(allow_globals)

    dtype = property(lambda self: self.entry.dtype)
    shape = property(lambda self: torch.Size(self.entry.size))

    def numel(self) -> int:
        return self.shape.numel()

    def dim(self) -> int:
        return len(self.entry.size)

    def __repr__(self) -> str:
        return f"TensorRef({self.entry.key}, {list(self.entry.size)}, {self.entry.dtype})"

    def load(self) -> torch.Tensor:
        e = self.entry
        if len(e.chunks) == 1:
            return self._chunk(*e.chunks[0])
        out = torch.empty(e.size, dtype=e.dtype)
        for offsets, sizes, piece in e.chunks:
            view = out
            for dim, (o, s) in enumerate(zip(offsets, sizes)):
                view = view.narrow(dim, o, s)
            view.copy_(self._chunk(offsets, sizes, piece))
        return out

    def _chunk(self, offsets: tuple, sizes: tuple, piece: Any) -> torch.Tensor:
        label = f"{self.index.folder}/{piece.file}: entry {self.entry.key}"
        value = io.load_slice(self.index.folder / piece.file, piece.offset, piece.length, label,
                              self.allow_globals)
        if not isinstance(value, torch.Tensor):
            raise io.CheckpointError(f"{label}: holds a {type(value).__name__}, not a tensor")
        if tuple(value.shape) != tuple(sizes) or value.dtype != self.entry.dtype:
            raise io.CheckpointError(f"{label}: stored chunk is {list(value.shape)} "
                                     f"{value.dtype}, the metadata says {list(sizes)} "
                                     f"{self.entry.dtype}")
        return value


class BytesRef:
    """A ``torch.save``d value that is no part of a state: carried, never read."""

    def __init__(self, entry: Entry) -> None:
        self.entry = entry

    def __repr__(self) -> str:
        return f"BytesRef({self.entry.key}, {self.entry.nbytes} bytes)"


def _value(v: Any) -> Any:
    return v.load() if isinstance(v, TensorRef) else v


class LazyEntry(dict):
    """A per-parameter optimizer state whose tensors are read on each access, never kept.

    It is a dict holding :class:`TensorRef` values: ``{**entry, ...}`` and ``dict(entry)`` copy
    the handles without reading (a migration step that adds keys keeps the others unread),
    while ``entry[key]``, ``get``, ``values`` and ``items`` return tensors.
    """

    def __getitem__(self, key: Any) -> Any:
        return _value(dict.__getitem__(self, key))

    def get(self, key: Any, default: Any = None) -> Any:
        return self[key] if key in self else default

    def values(self) -> Iterator[Any]:  # type: ignore[override]
        return (self[k] for k in self)

    def items(self) -> Iterator[tuple[Any, Any]]:  # type: ignore[override]
        return ((k, self[k]) for k in self)


@dataclass
class DcpRoot:
    """What :func:`open_dcp` found: the index, the nested tree, and how each state is stored."""

    index: Index
    tree: dict
    flat_optimizers: set = field(default_factory=set)  # tree paths saved flattened
    values: dict = field(default_factory=dict)  # entry key -> the value read (or its handle)
    tensors: dict = field(default_factory=dict)  # id(tensor or handle) -> (Entry, it)


def _set(root: dict, path: tuple, value: Any) -> None:
    node: Any = root
    for key, nxt in zip(path, path[1:]):
        child = {} if isinstance(nxt, str) else []
        if isinstance(node, list):
            node.extend([None] * (key + 1 - len(node)))
            node[key] = node[key] if node[key] is not None else child
            node = node[key]
        else:
            node = node.setdefault(key, child)
    last = path[-1]
    if isinstance(node, list):
        node.extend([None] * (last + 1 - len(node)))
    node[last] = value


def vgs_parents(paths: Iterator[tuple]) -> set[tuple]:
    """The paths whose children include every VGS option: VGS states."""
    children: dict[tuple, set] = {}
    for path in paths:
        children.setdefault(path[:-1], set()).add(path[-1])
    return {parent for parent, names in children.items() if VGS_KEYS <= names}


def may_hold_state(path: tuple, vgs: set[tuple]) -> bool:
    """Whether an entry at ``path`` can be part of an optimizer or VGS state: under a ``state``
    or ``param_groups`` key (nested, or flattened as ``state.<fqn>.<key>``), or in a VGS state
    (``vgs``: from :func:`vgs_parents`)."""
    prefixes = tuple(f"{s}." for s in _STATE_PARTS)
    return (any(isinstance(p, str) and (p in _STATE_PARTS or p.startswith(prefixes))
                for p in path) or any(path[:i] in vgs for i in range(len(path))))


def _bytes_value(index: Index, e: Entry, allow_globals: Sequence[str], vgs: set[tuple]) -> Any:
    if not may_hold_state(e.path, vgs):
        return BytesRef(e)
    label = f"{index.folder}/{e.piece.file}: entry {e.key}"
    return io.load_slice(index.folder / e.piece.file, e.piece.offset, e.piece.length, label,
                         allow_globals)


def build_tree(index: Index, allow_globals: Sequence[str] = ()) -> tuple[dict, dict]:
    tree: dict = {}
    values: dict = {}
    vgs = vgs_parents(e.path for e in index.entries.values())
    for e in index.entries.values():
        value = (TensorRef(index, e, allow_globals) if e.kind == "tensor"
                 else _bytes_value(index, e, allow_globals, vgs))
        try:
            _set(tree, e.path, value)
        except (TypeError, IndexError, AttributeError):
            raise io.CheckpointError(f"{index.folder}: entry {e.key}: its path {list(e.path)} "
                                     "clashes with another entry's") from None
        values[e.key] = value
    return tree, values


_PG, _ST = "param_groups.", "state."


def is_flat_optimizer(node: Any) -> bool:
    return (isinstance(node, dict) and node and all(isinstance(k, str) for k in node)
            and any(k.startswith(_PG) for k in node)
            and all(k.startswith((_PG, _ST)) for k in node))


def unflatten_optimizer(flat: Mapping[str, Any]) -> dict:
    """``state.<fqn>.<key>`` / ``param_groups.<fqn>.<key>`` back to state + param_groups.

    Group membership is not saved in this layout: consecutive parameters whose options are
    equal form one group (two adjacent groups with identical options merge, harmlessly).
    """
    per_fqn: dict[str, dict] = {}
    for k, v in flat.items():
        if k.startswith(_PG):
            fqn, key = k[len(_PG):].rsplit(".", 1)
            per_fqn.setdefault(fqn, {})[key] = v
    by_length = sorted(per_fqn, key=len, reverse=True)
    state: dict[str, dict] = {}
    for k, v in flat.items():
        if not k.startswith(_ST):
            continue
        rest = k[len(_ST):]
        fqn = next((f for f in by_length if rest.startswith(f + ".")), None)
        fqn, key = (fqn, rest[len(fqn) + 1:]) if fqn else tuple(rest.rsplit(".", 1))
        state.setdefault(fqn, {})[key] = v
    groups: list[dict] = []
    for fqn, options in per_fqn.items():
        if groups and {k: v for k, v in groups[-1].items() if k != "params"} == options:
            groups[-1]["params"].append(fqn)
        else:
            groups.append({**options, "params": [fqn]})
    return {"state": state, "param_groups": groups}


def flatten_optimizer(sd: Mapping[str, Any]) -> dict:
    """The inverse of :func:`unflatten_optimizer`, key for key as torch writes it."""
    flat: dict[str, Any] = {}
    for fqn, entry in sd["state"].items():
        for key in entry:
            flat[f"{_ST}{fqn}.{key}"] = dict.__getitem__(entry, key)
    for group in sd["param_groups"]:
        for fqn in group["params"]:
            for key, value in group.items():
                if key != "params":
                    flat[f"{_PG}{fqn}.{key}"] = value
    return flat


def _optimizer_shape(sd: dict) -> dict:
    """Per-parameter entries as :class:`LazyEntry`, keyed like the groups' ``params``.

    DCP writes every key as a string, so a plain ``optimizer.state_dict()`` comes back with
    state keys "0", "1" beside integer ``params``: the state is re-keyed to match.
    """
    params = [p for g in sd["param_groups"] for p in g.get("params", [])]
    by_text = {str(p): p for p in params}
    state = {by_text.get(str(k), k): LazyEntry(v) if isinstance(v, dict) else v
             for k, v in sd["state"].items()}
    return {**sd, "state": state}


def _normalize(node: Any, path: tuple, flat_paths: set, depth: int = 0) -> Any:
    if is_flat_optimizer(node):
        flat_paths.add(path)
        return _optimizer_shape(unflatten_optimizer(node))
    if is_optimizer_state(node):
        return _optimizer_shape(dict(node))
    if depth >= 5:
        return node
    if isinstance(node, dict):
        return {k: _normalize(v, (*path, k), flat_paths, depth + 1) for k, v in node.items()}
    if isinstance(node, list):
        return [_normalize(v, (*path, i), flat_paths, depth + 1) for i, v in enumerate(node)]
    return node


def _load_small(state: Any) -> Any:
    """A VGS state with its (per-parameter-count sized) tensors read."""
    return {k: _value(v) for k, v in state.items()}


def open_dcp(path: Path, allow_globals: Sequence[str] = ()):
    from upgd_migrate.checkpoint.formats.base import Checkpoint, Slot, _get, _label, find_states

    index = read_index(path)
    raw, values = build_tree(index, allow_globals)
    tensors = {id(v): (index.entries[k], v) for k, v in values.items()
               if isinstance(v, (TensorRef, BytesRef, torch.Tensor))}
    flat_paths: set = set()
    tree = _normalize(raw, (), flat_paths)
    slots = []
    for key, kind in find_states(tree):
        state = _get(tree, key)
        if kind == "vgs":
            state = _load_small(state)
            for k, v in state.items():  # read tensors stand for their entries from now on
                old = dict.get(_get(raw, key), k) if isinstance(_get(raw, key), dict) else None
                if isinstance(old, TensorRef):
                    tensors[id(v)] = (old.entry, v)
        slots.append(Slot(_label(key), kind, state, key))
    root = DcpRoot(index, raw, flat_paths, values, tensors)
    return Checkpoint(Path(path), CONTAINER, slots, root)


def materialize(value: Any) -> Any:
    """``value`` with every lazily stored tensor read (to run it, as ``verify`` does)."""
    if isinstance(value, TensorRef):
        return value.load()
    if isinstance(value, dict):
        return {k: materialize(dict.__getitem__(value, k)) for k in value}
    if isinstance(value, list):
        return [materialize(v) for v in value]
    return value
