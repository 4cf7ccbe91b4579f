"""`trainctl schema FAMILY`: the JSON Schema of a family's spec, offline (from the spec model,
the same document as `GET /families/{family}/schema`)."""

from __future__ import annotations

import json

import click


@click.command()
@click.argument("family")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["json", "yaml"]),
    default="json",
    show_default=True,
    help="Print the schema as JSON or YAML.",
)
def schema(family: str, fmt: str) -> None:
    """Print the JSON Schema of FAMILY's job spec (what a spec for it may hold)."""
    from core.spec import family_schema  # torch-free

    try:
        document = family_schema(family)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="FAMILY") from None
    if fmt == "yaml":
        import yaml

        click.echo(yaml.safe_dump(document, sort_keys=False), nl=False)
    else:
        click.echo(json.dumps(document, indent=2))
