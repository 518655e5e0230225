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
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="Output format.")
def schema_command(output_dir: str, check: bool, fmt: str) -> int:
    """Export JSON Schema for optimizer and VGS configs (for editors and check-jsonschema).

    \b
    Examples:
      upgd-migrate schema                       write schemas/*.schema.json
      upgd-migrate schema --check               in CI: exit 1 if a file is stale
      upgd-migrate schema --output-dir docs/schemas --check --format json

    \b
    Exit codes: 0 up to date (or written), 1 stale with --check.
    """
    texts = rendered_schemas()
    stale = [name for name, text in texts.items()
             if _current(os.path.join(output_dir, name)) != text]
    if not check:
        os.makedirs(output_dir, exist_ok=True)
        for name in stale:
            atomic_write(os.path.join(output_dir, name), texts[name])
    code = 1 if check and stale else 0
    if fmt == "json":
        from upgd_migrate.report import envelope

        done = "stale" if check else "written"
        files = [{"path": os.path.join(output_dir, name),
                  "status": done if name in stale else "current"} for name in texts]
        body = {"files": files, "summary": {"files": len(files), done: len(stale)}}
        click.echo(json.dumps(envelope("schema", body, code), indent=2))
        return code
    for name in stale:
        path = os.path.join(output_dir, name)
        click.echo(f"{path}: stale; run `upgd-migrate schema`" if check else f"wrote {path}")
    return code
