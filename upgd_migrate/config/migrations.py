"""The config migrations: one pure pass per id of ``legacy.MIGRATIONS``, parsed text in, edits out.

A pass changes only what has exactly one correct fix; anything it must leave alone becomes a
:class:`Skip` with the reason, so the command can print it instead of hiding it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Iterator

from upgd_migrate.legacy import (ALIASES, DEFAULT_SIGMA_RATIO, MARKER, MIGRATIONS, OPTIMIZERS,
                                 RELATIVE_SIGMA_RANGE, SIGMA_MARKER_RE, SIGMA_SET_RE,
                                 VGS_IGNORED_KEYS, sigma_set_by_config)
from upgd_migrate.config.lint import is_disabled
from upgd_migrate.config.locate import ConfigBlock, locate
from upgd_migrate.config.rules.values import (describe, read_values, yaml11_spelling,
                                              yaml11_strings)
from upgd_migrate.config.yaml_edit import (Edits, comment, first_on_line, in_place, is_flow, one_line,
                                    own_items)
from upgd_migrate.config.yaml_io import Mapping, Node, Scalar

_MIGRATED_SIGMA = re.compile(SIGMA_MARKER_RE)


@dataclass(frozen=True)
class SigmaPolicy:
    """Where a new relative sigma comes from: --sigma-ratio, --calibrate-from or the default."""

    ratio: float = DEFAULT_SIGMA_RATIO
    source: str = "the seed's default ratio"
    # A ratio calibrated from Adam moments holds for the Adam direction only (AdaptiveUPGD);
    # UPGD adds its noise to the raw gradient, whose size no checkpoint records.
    only_for: tuple[str, ...] | None = None
    # --calibrate-from settles a config from a run: it also rewrites a sigma `config` wrote
    # earlier and nobody edited since (its marker's `, set V`). --sigma-ratio does not: as a
    # hook argument it would overwrite a calibrated value on every commit.
    settles: bool = False


@dataclass(frozen=True)
class Change:
    migration: str
    offset: int  # in the text the pass read; the driver maps it to a line of the final text
    message: str


@dataclass(frozen=True)
class Skip:
    migration: str
    offset: int
    reason: str


@dataclass
class PassResult:
    edits: Edits
    changes: list[Change] = field(default_factory=list)
    skips: list[Skip] = field(default_factory=list)


Pass = Callable[[str, list[Node], SigmaPolicy], PassResult]
PASSES: dict[str, Pass] = {}


def migration(migration_id: str) -> Callable[[Pass], Pass]:
    """Register the pass of a migration listed in ``legacy.MIGRATIONS`` (its order is theirs)."""
    assert migration_id in {m.id for m in MIGRATIONS}, migration_id

    def register(fn: Pass) -> Pass:
        PASSES[migration_id] = fn
        return fn
    return register


def format_float(value: float) -> str:
    """``0.05``, ``2.5e-05`` -> ``2.5e-05``... always with a dot: a float to PyYAML and YAML 1.2."""
    text = repr(float(value))
    return yaml11_spelling(text) or text


def upgd_blocks(documents: list[Node]) -> Iterator[tuple[ConfigBlock, str]]:
    """(block, canonical optimizer) for every block naming a known UPGD-family optimizer."""
    for document in documents:
        for block in locate(document):
            name = block.name[1] if block.name else None
            if isinstance(name, Scalar) and name.tag == "str" and name.text in ALIASES:
                yield block, ALIASES[name.text]


def _kwarg(text: str, kwargs: Mapping, key: str, tag: tuple[str, ...],
           want: str) -> tuple[Scalar | None, str | None]:
    """(value node, why it cannot be edited or None): of the wrong type, or not written in place."""
    entry = kwargs.get(key)
    if entry is None:
        return None, None
    value = entry[1]
    if not isinstance(value, Scalar) or value.tag not in tag:
        return value, f"{key} is {describe(value)}, not {want}; fix it by hand"
    if not in_place(text, entry[0], value):
        return value, f"{key} is written with an anchor, alias or tag; fix it by hand"
    return value, None


@migration("adaptive-noise")
def adaptive_noise(text: str, documents: list[Node], policy: SigmaPolicy) -> PassResult:
    result, seen = PassResult(Edits(text)), set()
    for block, optimizer in upgd_blocks(documents):
        if "adaptive_noise" not in OPTIMIZERS[optimizer]:
            continue  # UPGDW has no adaptive noise; lint says so
        kwargs = block.kwargs[1] if block.kwargs else None
        if not isinstance(kwargs, Mapping):
            anchor = block.kwargs[1] if block.kwargs else block.name[1]
            result.skips.append(Skip("adaptive-noise", anchor.start, "no optimizer_kwargs "
                                     "mapping to set adaptive_noise in; add one by hand"))
        elif id(kwargs) not in seen:
            seen.add(id(kwargs))
            _migrate_noise(result, text, optimizer, kwargs, policy)
    return result


def _migrate_noise(result: PassResult, text: str, optimizer: str, kwargs: Mapping,
                   policy: SigmaPolicy) -> None:
    switch, switch_bad = _kwarg(text, kwargs, "adaptive_noise", ("bool",), "true or false")
    sigma, sigma_bad = _kwarg(text, kwargs, "sigma", ("int", "float"), "a number")
    bad = [(node, why) for node, why in ((switch, switch_bad), (sigma, sigma_bad)) if why]
    for node, why in bad:
        result.skips.append(Skip("adaptive-noise", node.start, why))
    if bad:
        return
    on = switch is not None and switch.value is True
    # A marked sigma is relative by decision; a `disable=UPG101` one is a deliberate small ratio.
    line = text[text.rfind("\n", 0, sigma.start) + 1:_eol(text, sigma)] if sigma else ""
    marked = _MIGRATED_SIGMA.search(line) is not None
    if marked and on and policy.settles:
        _settle(result, text, optimizer, kwargs, sigma, policy)
        return
    kept = marked or (on and is_disabled(line, "UPG101"))
    convert = not kept and (not on or sigma is None or sigma.value < RELATIVE_SIGMA_RANGE[0])
    if not convert and on:
        return
    reason = _why_not(kwargs, optimizer, policy, (sigma, convert), (switch, not on))
    if reason is not None:
        result.skips.append(Skip("adaptive-noise", kwargs.start, reason))
        return
    new = format_float(policy.ratio)
    # Insert first: a sigma made relative while adaptive_noise stays off would be read as an
    # absolute std, so when nothing can be inserted the block is left whole.
    if not _add_missing(result, text, optimizer, kwargs, switch is None,
                        convert and sigma is None, new, policy):
        return
    if switch is not None and not on:
        result.edits.replace(switch, "true", "adaptive_noise was false")
        result.changes.append(Change("adaptive-noise", switch.start,
                                     "adaptive_noise false -> true"))
    if convert and sigma is not None:
        result.edits.replace(sigma, new, f"sigma was {sigma.text} (absolute), set {new}")
        result.changes.append(Change("adaptive-noise", sigma.start, f"sigma {sigma.text} "
                                     f"(absolute) -> {new} (relative; {policy.source})"
                                     f"{_old_comment_note(text, sigma)}"))


def _settle(result: PassResult, text: str, optimizer: str, kwargs: Mapping, sigma: Scalar,
            policy: SigmaPolicy) -> None:
    """Rewrite a sigma an earlier `config` run wrote (still that value) with the policy's
    ratio, and the marker's `set` with it; an edited value is the user's and stays."""
    start = text.rfind("\n", 0, sigma.start) + 1
    found = re.search(SIGMA_SET_RE, text[start:_eol(text, sigma)])
    written = sigma_set_by_config(found.group(0)) if found else None
    new = format_float(policy.ratio)
    if written is None or written != float(sigma.value):
        why = ("its marker does not record the value config wrote" if written is None else
               f"it was edited after config wrote {written:g}")
        result.skips.append(Skip("adaptive-noise", sigma.start, f"sigma {sigma.text} not "
                                 f"settled to {new} ({policy.source}): {why}; set it by hand"))
        return
    if float(new) == written:
        return
    reason = _why_not(kwargs, optimizer, policy, (sigma, True))
    if reason is not None:
        result.skips.append(Skip("adaptive-noise", kwargs.start, reason))
        return
    result.edits.replace(sigma, new)
    result.edits.splices.append((start + found.start(1), start + found.end(1), new))
    result.changes.append(Change("adaptive-noise", sigma.start, f"sigma {sigma.text} "
                                 f"(relative, as config wrote it) -> {new} (relative; "
                                 f"{policy.source})"))


def _why_not(kwargs: Mapping, optimizer: str, policy: SigmaPolicy,
             *edits: tuple[Scalar | None, bool]) -> str | None:
    """Why this block must be left for a manual fix, or None when it can be migrated."""
    convert = edits[0][1]
    if convert and policy.only_for is not None and optimizer not in policy.only_for:
        return (f"{optimizer} adds noise to the raw gradient: a ratio {policy.source} does not "
                "apply; pass --sigma-ratio")
    own = {key.text for key, _ in own_items(kwargs)}
    for (node, change), key in zip(edits, ("sigma", "adaptive_noise")):
        if node is not None and change and key not in own:  # editing it would change every user
            return f"{key} comes from a merged anchor (<<); migrate it where the anchor is defined"
    return None


def _old_comment_note(text: str, sigma: Scalar) -> str:
    """Real configs comment sigma as an absolute std ("tune to 0.0005-0.001"); that comment
    stays on the line, so the change line says it now describes the old meaning."""
    return "; the line's own comment still describes the old absolute std" \
        if "#" in text[sigma.end:_eol(text, sigma)] else ""


def _eol(text: str, node: Node) -> int:
    end = text.find("\n", node.end)
    return len(text) if end < 0 else end


def _add_missing(result: PassResult, text: str, optimizer: str, kwargs: Mapping,
                 add_switch: bool, add_sigma: bool, new: str, policy: SigmaPolicy) -> bool:
    """Insert ``adaptive_noise: true`` and/or ``sigma`` in the mapping's own style; False (a
    skip recorded) when there is no place for them."""
    default = f"{OPTIMIZERS[optimizer]['sigma'].default:g}"
    entries = [("adaptive_noise: true", None)] if add_switch else []
    if add_sigma:
        entries.append((f"sigma: {new}", f"sigma was unset (absolute default {default}), "
                        f"set {new}"))
    if not entries:
        return True
    at = _add_entries(result.edits, text, kwargs, entries)
    if at is None:
        result.skips.append(Skip("adaptive-noise", kwargs.start, "no single-line entry in "
                                 "optimizer_kwargs to add adaptive_noise after; add it by hand"))
        return False
    if add_switch:
        result.changes.append(Change("adaptive-noise", at, "adaptive_noise: true added"))
    if add_sigma:
        result.changes.append(Change("adaptive-noise", at, f"sigma unset (absolute "
                                     f"default {default}) -> {new} (relative; {policy.source})"))
    return True


def _add_entries(edits: Edits, text: str, mapping: Mapping,
                 entries: list[tuple[str, str | None]]) -> int | None:
    """Add ``entries`` (text, marker) to ``mapping``; return where, or None when it cannot."""
    items = own_items(mapping)
    if is_flow(text, mapping):
        at = items[-1][1].end if items else mapping.end - 1
        joined = ", ".join(entry for entry, _ in entries)
        edits.insert(at, f", {joined}" if items else joined)
        for _, marker in entries:
            if marker:
                edits.note(at, marker)
        return at
    sigma = mapping.get("sigma")
    after = [(k, v) for k, v in items if one_line(text, k, v)]
    if sigma is not None and sigma in after:
        after.append(sigma)  # prefer to add adaptive_noise right below sigma
    if not after:
        return None
    key, value = after[-1]
    indent = " " * (key.col - 1)
    return edits.insert_lines_after(value, [indent + entry + (comment(marker) if marker else "")
                                            for entry, marker in entries])


def _is_bool(node: Node | None, value: bool) -> bool:
    return isinstance(node, Scalar) and node.tag == "bool" and node.value is value


@migration("instant-noise-scale")
def instant_noise_scale(text: str, documents: list[Node], policy: SigmaPolicy) -> PassResult:
    result, seen = PassResult(Edits(text)), set()
    for block, optimizer in upgd_blocks(documents):
        kwargs = block.kwargs[1] if block.kwargs else None
        if (not isinstance(kwargs, Mapping) or id(kwargs) in seen or block.vgs is None
                or not block.vgs.enabled or "instant_noise_scale" not in OPTIMIZERS[optimizer]):
            continue
        seen.add(id(kwargs))
        switch, _ = _kwarg(text, kwargs, "adaptive_noise", ("bool",), "true or false")
        instant, why = _kwarg(text, kwargs, "instant_noise_scale", ("bool",), "true or false")
        if not (_is_bool(switch, True) and _is_bool(instant, False)):
            continue
        if why is not None:
            result.skips.append(Skip("instant-noise-scale", instant.start, why))
        else:
            result.edits.replace(instant, "true", "instant_noise_scale was false")
            result.changes.append(Change("instant-noise-scale", instant.start,
                                         "instant_noise_scale false -> true (VGS)"))
    return result


@migration("yaml11-floats")
def yaml11_floats(text: str, documents: list[Node], policy: SigmaPolicy) -> PassResult:
    result = PassResult(Edits(text))
    for document in documents:
        # As lint: only what the optimizer and VGS read; the user's own settings are theirs.
        for node in yaml11_strings(read_values(locate(document))):
            better = yaml11_spelling(node.text)
            why = (f"no YAML 1.1 spelling of {node.text} to write" if better is None else
                   None if text.startswith(node.text, node.start) else  # not `&a 1e-6`
                   f"{node.text} carries an anchor or tag; write {better} by hand")
            if why is not None:
                result.skips.append(Skip("yaml11-floats", node.start, why))
                continue
            result.edits.replace(node, better)
            result.changes.append(Change("yaml11-floats", node.start, f"{node.text} -> {better}"))
    return result


@migration("vgs-unread-keys")
def vgs_unread_keys(text: str, documents: list[Node], policy: SigmaPolicy) -> PassResult:
    result, seen = PassResult(Edits(text)), set()
    for document in documents:
        for block in locate(document):
            if block.vgs is None:
                continue
            holder = block.container.get("vgs")
            mapping = holder[1] if block.vgs.layout == "nested" else block.container
            if id(mapping) not in seen:
                seen.add(id(mapping))
                _comment_out_unread(result, text, block.vgs.entries, mapping)
    return result


def _comment_out_unread(result: PassResult, text: str, entries: dict, mapping: Mapping) -> None:
    unread = [(k, v) for name, (k, v) in entries.items() if name in VGS_IGNORED_KEYS]
    own = own_items(mapping)
    if not unread:
        return
    if len(unread) == len(own):
        reason = "every key of this vgs mapping is unread; remove the mapping by hand"
    elif is_flow(text, mapping):
        reason = "inside a flow mapping {...}; remove it by hand"
    else:
        reason = None
    for key, value in unread:
        if reason is None and one_line(text, key, value) and first_on_line(text, key):
            result.edits.insert(key.start, f"# {MARKER} unread VGS key: ")
            result.changes.append(Change("vgs-unread-keys", key.start, f"{key.text} commented "
                                         "out (no VGS version reads it)"))
        else:
            result.skips.append(Skip("vgs-unread-keys", key.start, f"{key.text} is read by no "
                                     f"VGS version: {reason or 'remove it by hand'}"))
