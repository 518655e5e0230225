"""The optimizer and VGS settings of a training config, for ``verify --config``.

A deliberately small reader: the linter's ``yaml_io``/``locate`` (another branch) own config
parsing; once merged this should call them. It finds the first mapping holding
``optimizer_kwargs`` anywhere in the document (layouts a and b of DOMAIN.md section 4) and a VGS
block beside it, at the top, or as flat ``vgs_*`` trainer keys (layout c).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from upgd_migrate.errors import UpgdMigrateError

FLAT_VGS = {"vgs_alpha": "alpha", "vgs_beta": "beta", "vgs_warmup_steps": "warmup_steps",
            "variance_gradient_scaling": "enabled"}
SYNCED = ("sigma", "adaptive_noise", "instant_noise_scale")


def _find(node: Any, key: str) -> Mapping | None:
    if isinstance(node, Mapping):
        if isinstance(node.get(key), Mapping):
            return node
        children = node.values()
    elif isinstance(node, list):
        children = node
    else:
        return None
    return next((m for c in children if (m := _find(c, key)) is not None), None)


def read_config(path: Path) -> tuple[dict, dict | None]:
    """(optimizer kwargs, VGS settings or None) of a YAML config."""
    from ruamel.yaml import YAML, YAMLError

    try:
        doc = YAML(typ="safe", pure=True).load(Path(path).read_text())
    except (OSError, YAMLError) as e:
        raise UpgdMigrateError(f"{path}: cannot read config ({e})") from e
    holder = _find(doc, "optimizer_kwargs")
    if holder is None:
        raise UpgdMigrateError(f"{path}: no optimizer_kwargs block found")
    vgs = holder.get("vgs") if isinstance(holder.get("vgs"), Mapping) else None
    if vgs is None and isinstance(doc, Mapping) and isinstance(doc.get("vgs"), Mapping):
        vgs = doc["vgs"]
    if vgs is None:
        flat = {FLAT_VGS[k]: v for k, v in holder.items() if k in FLAT_VGS}
        vgs = flat or None
    return dict(holder["optimizer_kwargs"]), dict(vgs) if vgs else None


def mismatches(kwargs: Mapping[str, Any], state: Mapping[str, Any]) -> list[str]:
    """Noise settings where config and checkpoint disagree (the checkpoint wins on resume)."""
    out = []
    for i, g in enumerate(state["param_groups"]):
        for key in SYNCED:
            if key in kwargs and key in g and kwargs[key] != g[key]:
                out.append(f"group {i} {key}: config {kwargs[key]!r}, checkpoint {g[key]!r}")
    return out
