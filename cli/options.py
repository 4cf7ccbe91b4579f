"""Arguments and options several commands share."""

from __future__ import annotations

from pathlib import Path

import click

spec_path_argument = click.argument(
    "spec_path", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
overrides_option = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a spec value, e.g. --set training.epochs=5 (repeatable).",
)
