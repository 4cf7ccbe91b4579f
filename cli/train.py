"""`trainctl train SPEC --out DIR`: run one training job on this machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

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
        raise click.ClickException(str(exc) + _data_root_hint(str(exc))) from None
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
    click.echo(json.dumps(final_line(out_dir, summary)))


def final_line(out_dir: Path, summary: dict[str, Any]) -> dict[str, Any]:
    """What `trainctl train` prints last (one JSON object): the run directory, the test
    metrics of the best checkpoint, the best epoch with its monitor and score, whether it
    stopped early, and the seconds it took."""
    line: dict[str, Any] = {"out": str(out_dir), **summary.get("best_metrics", {})}
    line["best_epoch"] = summary.get("best_epoch")
    monitor = summary.get("monitor")
    if monitor:
        line["monitor"] = monitor
        line[f"best_{monitor}"] = summary.get("best_score")
    line["epochs"] = summary.get("epochs_completed")
    line["stopped_early"] = summary.get("stopped_early")
    line["seconds"] = summary.get("seconds")
    return line


def _data_root_hint(message: str) -> str:
    """For a data path the spec refused as absolute or climbing out: where relative paths are
    looked up."""
    if "relative to the data root" not in message:
        return ""
    from core.data.roots import data_roots

    roots = ", ".join(str(r) for r in data_roots()) or "none"
    return (
        f"\n  data paths are relative to the data roots: {roots} (TRAINCTL_DATA_ROOT, several "
        "separated by ':'); put your file under one of them, or add its folder to "
        "TRAINCTL_DATA_ROOT, and name it relative to that folder"
    )
