"""The rule registry: every rule's code, name, severity, one-line summary and fixing command.

Check functions live in the sibling modules and report through :class:`Context`, which fills
in severity and fix from this table, so a rule's metadata is written once.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from upgd_migrate.findings import Finding, Severity
from upgd_migrate.legacy import (ABSOLUTE_SIGMA_MAX, MIGRATED_CODES, RELATIVE_SIGMA_RANGE,
                                 UNSAFE_CODES, UNSAFE_FIXES_OPTION, VGS_VERSIONS)

FIX_CONFIG = "upgd-migrate config"
FIX_CONFIG_UNSAFE = f"{FIX_CONFIG} {UNSAFE_FIXES_OPTION}"
E, W, I = Severity.ERROR, Severity.WARNING, Severity.INFO


@dataclass(frozen=True)
class Rule:
    code: str
    name: str
    severity: Severity
    summary: str
    fix: str | None = None


RULES: dict[str, Rule] = {r.code: r for r in (
    Rule("UPG001", "unreadable-file", E, "file cannot be read as UTF-8 text (missing, binary, "
         "too large)"),
    Rule("UPG002", "invalid-yaml", E, "file is not valid YAML"),
    Rule("UPG003", "duplicate-key", E, "a mapping repeats a key; loaders disagree on which wins"),
    Rule("UPG004", "no-mapping", W, "file is empty or its documents hold no mapping"),
    Rule("UPG101", "unmigrated-sigma", E, "adaptive_noise on with sigma below the plausible "
         "relative range: an un-migrated absolute std"),
    Rule("UPG102", "relative-sigma-as-absolute", W, "adaptive_noise off with sigma above the "
         "plausible absolute range: a relative ratio read as an absolute std"),
    Rule("UPG103", "vgs-fixed-noise-sgd", W, "VGS with fixed noise on SGD-type UPGD: noise "
         "amplified up to 1/min_scaling_factor"),
    Rule("UPG104", "vgs-fixed-noise-adam", I, "VGS with fixed noise on an Adam-type UPGD: "
         "transient amplification after a VGS drop"),
    Rule("UPG105", "vgs-noise-ema-lag", W, "VGS with adaptive_noise and instant_noise_scale "
         "false: the noise-scale EMA lags VGS changes"),
    Rule("UPG106", "large-relative-sigma", W, "adaptive_noise on with sigma above the "
         "plausible relative range (up to 1)"),
    Rule("UPG107", "relative-sigma-above-one", E, "adaptive_noise on with sigma above 1: "
         "noise larger than the update, a percentage typed as a ratio"),
    Rule("UPG201", "unsupported-kwarg", E, "keyword argument the named optimizer does not "
         "accept (TypeError at construction)"),
    Rule("UPG202", "unknown-key", E, "key no optimizer or VGS version knows (with a "
         "did-you-mean)"),
    Rule("UPG203", "vgs-ignored-key", W, "VGS key that no VGS version reads"),
    Rule("UPG204", "vgs-version-key", W, "VGS key that the target VGS version (--vgs-version) "
         "does not read yet"),
    Rule("UPG301", "wrong-type", E, "value of the wrong type"),
    Rule("UPG302", "out-of-range", E, "value outside the range the constructor accepts"),
    Rule("UPG303", "unknown-optimizer", E, "optimizer name that is not a known optimizer"),
    Rule("UPG304", "yaml11-string-float", E, "number PyYAML (YAML 1.1) reads as a string, "
         "like 1e-6"),
    Rule("UPG305", "yaml11-bool-string", E, "string PyYAML (YAML 1.1) reads as a boolean, "
         "like noise_sync: off"),
)}
# A rule's fix is `upgd-migrate config` exactly when a registered migration always fixes it
# (with --unsafe-fixes when that migration may change what the user's own code reads).
RULES = {code: replace(rule, fix=FIX_CONFIG) if code in MIGRATED_CODES else
         replace(rule, fix=FIX_CONFIG_UNSAFE) if code in UNSAFE_CODES else rule
         for code, rule in RULES.items()}


@dataclass
class LintOptions:
    """Tunable settings (CLI: --relative-sigma, --absolute-sigma-max, --vgs-version)."""

    relative_sigma: tuple[float, float] = RELATIVE_SIGMA_RANGE
    absolute_sigma_max: dict[str, float] = field(default_factory=lambda: dict(ABSOLUTE_SIGMA_MAX))
    vgs_version: str = VGS_VERSIONS[-1]


@dataclass
class Context:
    """Where checks report to: one file's findings, with the options in force."""

    path: str
    options: LintOptions = field(default_factory=LintOptions)
    findings: list[Finding] = field(default_factory=list)
    lines: tuple[str, ...] = ()  # the file's text (a plain dict has none): for markers

    def line(self, node) -> str:
        """The text of the line ``node`` starts on, or ``""`` without a text."""
        number = getattr(node, "line", 0)
        return self.lines[number - 1] if 0 < number <= len(self.lines) else ""

    def report(self, code: str, node, message: str) -> None:
        """Record rule ``code`` at ``node`` (anything with 1-based ``line`` and ``col``; a node
        of a plain mapping carries its ``loc`` instead, see :mod:`upgd_migrate.config.plain`)."""
        rule = RULES[code]
        self.findings.append(Finding(self.path, node.line, node.col, code, rule.severity,
                                     message, rule.fix, getattr(node, "loc", ())))


def rule_for(selector: str) -> Rule | None:
    """A rule by code (UPG101) or by name (unmigrated-sigma)."""
    selector = selector.strip()
    if selector.upper() in RULES:
        return RULES[selector.upper()]
    return next((r for r in RULES.values() if r.name == selector.lower()), None)
