"""The migration registry: small pure functions in one ordered list, each with a stable id.

Imports no step module (they import it); :mod:`upgd_migrate.checkpoint.steps` imports both.

A step takes a state dict and returns a new one (sharing every untouched tensor and value with
its input, never mutating it) plus notes, or ``None`` when it has nothing to do. The runner
applies the steps of a state's kind in registry order and records the ids it applied in an
audit log that lives where ``Optimizer.load_state_dict`` and ``weights_only`` loading keep it:
a plain ``{str: str | int | float | list}`` dict under ``upgd_migrate_audit`` in every param group
(unknown group keys survive loading) and at the top of a VGS state. The generation the state
had before its first migration is written once, under ``from``, and never overwritten.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

from upgd_migrate.checkpoint.detect import AUDIT_KEY, generation, optimizer_class, vgs_version


@dataclass(frozen=True)
class Note:
    level: str  # "info" | "warning"
    text: str


@dataclass(frozen=True)
class Context:
    """What a step may use besides the state: the user's choices and container facts."""

    sigma_ratio: Optional[float] = None  # --sigma-ratio: overrides calibration
    instant_noise: bool = False  # --instant-noise: move EMA-path groups to the instant path
    param_numels: Optional[list[int]] = None  # sizes of the model's tensors, to size VGS stats


@dataclass
class Outcome:
    state: dict
    notes: list[Note] = field(default_factory=list)


Step = Callable[[dict, Context], Optional[Outcome]]


@dataclass(frozen=True)
class Migration:
    id: str
    kind: str  # "optimizer" | "vgs"
    summary: str
    apply: Step


REGISTRY: list[Migration] = []


def register(id: str, kind: str, summary: str) -> Callable[[Step], Step]:
    def decorate(fn: Step) -> Step:
        if any(m.id == id for m in REGISTRY):
            raise ValueError(f"migration id {id!r} registered twice")
        REGISTRY.append(Migration(id, kind, summary, fn))
        return fn
    return decorate


@dataclass
class Result:
    """A migrated state (or the input itself when nothing applied), what ran, and why."""

    kind: str
    cls: str | None
    generation: str
    state: Any
    applied: list[str] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.applied)


def _run(state: dict, kind: str, ctx: Context) -> tuple[dict, list[str], list[Note]]:
    applied: list[str] = []
    notes: list[Note] = []
    for migration in REGISTRY:
        if migration.kind != kind:
            continue
        outcome = migration.apply(state, ctx)
        if outcome is None:
            continue
        state = outcome.state
        applied.append(migration.id)
        notes.extend(outcome.notes)
    return state, applied, notes


def _audit(old: Any, original: str, applied: list[str]) -> dict:
    old = dict(old) if isinstance(old, Mapping) else {}
    head = {"from": old.pop("from", original), "applied": [*old.pop("applied", []), *applied]}
    return {**head, **old}


def migrate_optimizer(sd: dict, ctx: Context = Context()) -> Result:
    cls = optimizer_class(sd)
    if cls is None:
        return Result("optimizer", None, "-", sd, notes=[Note(
            "info", "not a UPGD-family optimizer state (no sigma in its groups): left untouched")])
    original = generation(sd, cls)
    state, applied, notes = _run(sd, "optimizer", ctx)
    if original == "G0":
        notes.append(Note("warning", "G0 states were trained with a -2*lr update (a bug fixed "
                                     "since): the packaged optimizer steps -lr, so the step "
                                     "size halves on resume unless lr is doubled"))
    if applied:
        groups = [{**g, AUDIT_KEY: _audit(g.get(AUDIT_KEY), original, applied)}
                  for g in state["param_groups"]]
        state = {**state, "param_groups": groups}
    return Result("optimizer", cls, original, state, applied, notes)


def migrate_vgs(sd: dict, ctx: Context = Context()) -> Result:
    original = vgs_version(sd)
    state, applied, notes = _run(sd, "vgs", ctx)
    if applied:
        state = {**state, AUDIT_KEY: _audit(sd.get(AUDIT_KEY), f"v{original}", applied)}
    return Result("vgs", "VarianceGradientScaler", f"v{original}", state, applied, notes)

