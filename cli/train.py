"""`trainctl train SPEC --out DIR`: run one training job on this machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click

from cli.options import overrides_option, spec_path_argument


@click.command()
@spec_path_argument
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Run directory for metrics, checkpoints and outputs.",
)
@overrides_option
@click.option(
    "--resume",
    default=None,
    metavar="auto|PATH",
    help="Continue from a checkpoint ('auto': the run directory's last one).",
)
def train(spec_path: Path, out_dir: Path, overrides: tuple[str, ...], resume: str | None) -> None:
    """Train SPEC_PATH (YAML or JSON) and write its outputs into --out."""
    from core.spec import SpecError, load_spec

    try:
        spec = load_spec(spec_path, overrides)
    except SpecError as exc:
        raise click.ClickException(str(exc)) from None
    if spec.resources.devices > 1:
        from core.launch import training_command

        cmd = training_command(
            spec_path,
            out_dir,
            spec.resources.devices,
            overrides=overrides,
            progress=sys.stderr.isatty(),
        )
        if resume:
            cmd += ["--resume", resume]
        sys.exit(subprocess.call(cmd, env=os.environ.copy()))
    from core.run import train as run_training
    from core.run import write_error

    try:
        summary = run_training(spec, out_dir, resume, progress=True)
    except Exception as exc:
        write_error(out_dir, exc)
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from None
    click.echo(
        json.dumps(
            {
                "out": str(out_dir),
                **summary.get("best_metrics", {}),
                "best_epoch": summary.get("best_epoch"),
                "seconds": summary.get("seconds"),
            }
        )
    )
