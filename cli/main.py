"""`trainctl`: one entry point; each command imports what it needs only when it runs."""

from __future__ import annotations

import click

from cli.client import CLIENT_COMMANDS
from cli.schema import schema
from cli.service import api, keys, migrate, up, worker
from cli.sweep import GROUP_COMMANDS
from cli.train import train


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="trainctl", prog_name="trainctl")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def main(verbose: int) -> None:
    """trainctl: train graph and embedding models, locally or as a service."""
    import logging

    from store.logformat import configure_logging

    level = logging.WARNING - 10 * min(verbose + 1, 2)
    try:
        configure_logging(level)  # text, or JSON lines with TRAINCTL_LOG_FORMAT=json
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


main.add_command(train)
main.add_command(schema)
for command in (up, api, worker, migrate, keys, *CLIENT_COMMANDS, *GROUP_COMMANDS):
    main.add_command(command)

if __name__ == "__main__":
    main()
