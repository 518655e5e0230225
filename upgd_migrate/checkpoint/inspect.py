"""``checkpoint inspect``: what a file holds, and what migrating it would do."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from upgd_migrate.checkpoint import runfolder
from upgd_migrate.checkpoint.detect import FORMAT_KEY
from upgd_migrate.checkpoint.pipeline import migrate_checkpoint
from upgd_migrate.checkpoint.steps import Context
from upgd_migrate.sparsefile import is_sparse
from upgd_migrate.report import plural

_NOISE_KEYS = ("sigma", "adaptive_noise", "instant_noise_scale")
_KNOWN_GROUP_KEYS = frozenset({
    "params", "lr", "weight_decay", "beta_utility", "sigma", "beta1", "beta2", "eps", "betas",
    "amsgrad", "adaptive_noise", "noise_beta", "min_noise_std", "instant_noise_scale", "foreach",
    "update", FORMAT_KEY, "upgd_migrate_audit",
    "noise_seed", "noise_draws"})  # the shared noise streams of a distributed run (issue 14)


def _optimizer_facts(sd: Mapping[str, Any]) -> dict:
    steps = sorted({int(e["step"]) for e in sd["state"].values()
                    if isinstance(e, Mapping) and "step" in e})
    groups = []
    for g in sd["param_groups"]:
        facts = {k: g[k] for k in _NOISE_KEYS if k in g}
        facts["params"] = len(g["params"])
        extra = sorted(k for k in g if k not in _KNOWN_GROUP_KEYS)
        if extra:
            facts["other keys"] = extra
        groups.append(facts)
    keys = sorted(set().union(*(set(e) for e in sd["state"].values() if isinstance(e, Mapping)))
                  if sd["state"] else set())
    return {"step": steps, "state keys": keys, "groups": groups}


def _vgs_facts(sd: Mapping[str, Any]) -> dict:
    keys = ("enabled", "step_count", "alpha", "beta", "warmup_steps")
    return {k: sd[k] for k in keys if k in sd}


def inspect_file(path: Path, allow_globals: Sequence[str] = (),
                 found: runfolder.Found | None = None) -> dict:
    """``found``: what a walk said ``path`` is; None: named (strict). Raises
    :class:`~upgd_migrate.checkpoint.runfolder.NotAState` for a walked file with no state."""
    found = found or runfolder.Found(path, Path(path.name), "torch", False)
    if is_sparse(path):  # a torch zip in a bucket: its pickle, then its states' tensors
        doc = runfolder.by_range(lambda: _inspect(path, allow_globals, found))
        if doc is not None:
            return doc
    return _inspect(path, allow_globals, found)


def _inspect(path: Path, allow_globals: Sequence[str], found: runfolder.Found) -> dict:
    ckpt = runfolder.open_found(found, allow_globals)
    results = migrate_checkpoint(ckpt, Context())
    states = []
    for slot, res in zip(ckpt.slots, results):
        r = res.result
        facts = _optimizer_facts(slot.state) if slot.kind == "optimizer" else _vgs_facts(slot.state)
        states.append({"where": slot.where, "kind": slot.kind, "class": r.cls,
                       "generation": r.generation, "would_apply": r.applied, **facts})
    return {"path": str(path), "container": ckpt.container, "size": ckpt.size, "states": states}


def inspect_path(path, allow_globals: Sequence[str] = ()) -> dict:
    """``inspect_file``, ``{"path", "error"}`` for a file that cannot be read, or
    ``{"path", "carried"}`` for a walked file with no state. ``path``: a path, or what a walk
    found (a ``runfolder.Found``)."""
    from upgd_migrate.checkpoint.pipeline import message
    from upgd_migrate.errors import UpgdMigrateError

    found = path if isinstance(path, runfolder.Found) else None
    path = Path(found.path if found else path)
    try:
        return inspect_file(path, allow_globals, found)
    except runfolder.NotAState as e:
        return {"path": str(path), "carried": str(e)}
    except (UpgdMigrateError, KeyError, TypeError, ValueError) as e:
        return {"path": str(path), "error": message(path, e)}


def _fmt(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return f"{value:g}" if isinstance(value, float) else str(value)


def inspect_text(doc: Mapping[str, Any]) -> list[str]:
    lines = [f"{doc['path']}: {doc['container']}, {plural(doc['size'], 'byte')}, "
             f"{plural(len(doc['states']), 'state')}"]
    for st in doc["states"]:
        if st["class"] is None:  # torch.optim.Adam and friends: not ours, not "current"
            lines.append(f"  {st['where']}: other optimizer -> not a UPGD/VGS state: skipped")
        else:
            todo = ", ".join(st["would_apply"]) or "current, nothing to do"
            lines.append(f"  {st['where']}: {st['class']} {st['generation']} -> {todo}")
        for key, value in st.items():
            if key in ("where", "kind", "class", "generation", "would_apply"):
                continue
            if key == "groups":
                for i, g in enumerate(value):
                    lines.append(f"    group {i}: " + ", ".join(f"{k}={_fmt(v)}"
                                                              for k, v in g.items()))
            else:
                lines.append(f"    {key}: {_fmt(value)}")
    return lines
