"""``upgd-migrate schema``: write the JSON Schema files; ``--check`` fails when they are stale."""
from __future__ import annotations

import json
import os

import click

from upgd_migrate.fileio import atomic_write


def rendered_schemas() -> dict[str, str]:
    """File name -> JSON text, for every exported model."""
    from upgd_migrate.schema import SCHEMA_MODELS, json_schema  # pydantic: only when asked

    return {f"{name}.schema.json": json.dumps(json_schema(model), indent=2) + "\n"
            for name, model in SCHEMA_MODELS.items()}


def _current(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError:
        return None


@click.command("schema")
@click.option("--output-dir", default="schemas", show_default=True,
              type=click.Path(file_okay=False), help="Folder of the .schema.json files.")
@click.option("--check", is_flag=True, help="Write nothing; exit 1 if any file is stale.")
def schema_command(output_dir: str, check: bool) -> int:
    """Export JSON Schema for optimizer and VGS configs (for editors and check-jsonschema)."""
    texts = rendered_schemas()
    stale = [name for name, text in texts.items()
             if _current(os.path.join(output_dir, name)) != text]
    if check:
        for name in stale:
            click.echo(f"{os.path.join(output_dir, name)}: stale; run `upgd-migrate schema`")
        return 1 if stale else 0
    os.makedirs(output_dir, exist_ok=True)
    for name in stale:
        atomic_write(os.path.join(output_dir, name), texts[name])
        click.echo(f"wrote {os.path.join(output_dir, name)}")
    return 0
