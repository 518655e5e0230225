"""The optimizer and VGS settings of a training config, for ``verify --config``.

Parsing and finding the blocks is the linter's job (:mod:`upgd_migrate.config.yaml_io`,
:mod:`upgd_migrate.config.locate`: any of the three legacy layouts, anywhere in the document); this
module only turns the first block found into plain values.
"""
from __future__ import annotations

import math

from pathlib import Path
from typing import Any, Mapping

from upgd_migrate.config import yaml_io
from upgd_migrate.errors import UpgdMigrateError
from upgd_migrate.fileio import UnreadableFile, read_text
from upgd_migrate.config.locate import locate

SYNCED = ("sigma", "adaptive_noise", "instant_noise_scale")


def _plain(node: yaml_io.Node) -> Any:
    if isinstance(node, yaml_io.Scalar):
        return node.value
    if isinstance(node, yaml_io.Mapping):
        return {k.text if isinstance(k, yaml_io.Scalar) else str(k): _plain(v)
                for k, v in node.items}
    return [_plain(item) for item in node.items]


def read_config(path: Path) -> tuple[dict, dict | None]:
    """(optimizer kwargs, VGS settings or None) of the first block in a YAML config."""
    try:
        documents = yaml_io.load_all(read_text(str(path)))
    except (UnreadableFile, yaml_io.YamlError) as e:
        raise UpgdMigrateError(f"{path}: cannot read config ({e})") from e
    block = next((b for doc in documents for b in locate(doc) if b.kwargs is not None), None)
    if block is None or not isinstance(block.kwargs[1], yaml_io.Mapping):
        raise UpgdMigrateError(f"{path}: no optimizer_kwargs block found")
    vgs = None
    if block.vgs is not None:
        vgs = {key: _plain(value) for key, (_, value) in block.vgs.entries.items()}
        vgs["enabled"] = block.vgs.enabled
    return _plain(block.kwargs[1]), vgs


# `config --calibrate-from` writes 3 significant digits (at most 0.5% off); a checkpoint keeps
# full precision. Closer than this is the same setting, not a disagreement.
SIGMA_REL_TOL = 0.01


def _agree(key: str, config_value: Any, saved: Any) -> bool:
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool)
                  for v in (config_value, saved))
    if key == "sigma" and numbers:
        return math.isclose(config_value, saved, rel_tol=SIGMA_REL_TOL)
    return config_value == saved


def mismatches(kwargs: Mapping[str, Any], state: Mapping[str, Any]) -> list[str]:
    """Noise settings where config and checkpoint disagree (the checkpoint wins on resume)."""
    out = []
    for i, g in enumerate(state["param_groups"]):
        for key in SYNCED:
            if key in kwargs and key in g and not _agree(key, kwargs[key], g[key]):
                out.append(f"group {i} {key}: config {kwargs[key]!r}, checkpoint {g[key]!r}")
    return out
