"""`trainctl sweep`, `trainctl group`, `trainctl groups`: job groups (docs/sweeps.md).

A sweep is submitted to `POST /groups`, which expands and validates it whole before storing
anything; these commands only build the request and show what the API answers.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click
import yaml

from cli.client import FINISHED, ApiClient, _table
from cli.options import overrides_option, spec_path_argument

STATUS_ORDER = ("succeeded", "failed", "cancelled", "running", "queued")


def parse_axis(item: str, option: str) -> tuple[str, Any]:
    """`key=v1,v2,...` (each a YAML scalar), `key=range:START:STOP[:STEP]` (stop excluded) or
    `key=[YAML list]` -> (key, values or `{range: [...]}`); BadParameter otherwise."""
    key, sep, raw = item.partition("=")
    key, raw = key.strip(), raw.strip()
    if not sep or not key or not raw:
        raise click.BadParameter(
            f"{item!r}: KEY=V1,V2,... or KEY=range:START:STOP[:STEP]", param_hint=option
        )
    try:
        if raw.startswith("range:"):
            bounds = [yaml.safe_load(part) for part in raw.removeprefix("range:").split(":")]
            return key, {"range": bounds}
        if raw.startswith("["):
            values = yaml.safe_load(raw)
            if not isinstance(values, list):
                raise click.BadParameter(f"{item!r}: not a YAML list", param_hint=option)
            return key, values
        return key, [yaml.safe_load(part) if part.strip() else "" for part in raw.split(",")]
    except yaml.YAMLError as exc:
        raise click.BadParameter(f"{item!r}: {exc}", param_hint=option) from None


def build_request(
    path: Path,
    grid: tuple[str, ...],
    zips: tuple[str, ...],
    overrides: tuple[str, ...],
    name: str | None,
    metric: str | None,
) -> dict[str, Any]:
    """The `POST /groups` body: PATH is a spec (the sweep from --grid/--zip) or a group file
    (`{spec, sweep, name?, metric?}`, which --grid/--zip extend)."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise click.ClickException(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise click.ClickException(f"{path}: a spec or group file is a mapping")
    if "spec" in data and "sweep" in data:
        body = dict(data)
        sweep = dict(body.get("sweep") or {})
    else:
        body, sweep = {"spec": data}, {}
    if overrides:
        from core.spec import SpecError, apply_overrides  # torch-free (as `submit`)

        if not isinstance(body["spec"], dict):
            raise click.BadParameter("the group file's spec is text", param_hint="--set")
        try:
            body["spec"] = apply_overrides(body["spec"], overrides)
        except SpecError as exc:
            raise click.BadParameter(str(exc), param_hint="--set") from None
    axes = dict(sweep.get("grid") or {})
    axes.update(parse_axis(item, "--grid") for item in grid)
    blocks = list(sweep.get("zip") or [])
    for item in zips:
        blocks.append(dict(parse_axis(part, "--zip") for part in item.split(";") if part.strip()))
    if not axes and not blocks:
        raise click.UsageError(
            "nothing to sweep: give --grid KEY=V1,V2 (or --zip, or a group file)"
        )
    body["sweep"] = {**({"grid": axes} if axes else {}), **({"zip": blocks} if blocks else {})}
    if name:
        body["name"] = name
    if metric:
        body["metric"] = metric
    return body


def progress_line(group: dict[str, Any]) -> str:
    """`3/12 done: 2 succeeded, 1 failed; 4 running, 5 queued`."""
    counts = group.get("counts") or {}
    done = sum(counts.get(s, 0) for s in FINISHED)
    finished = ", ".join(f"{counts[s]} {s}" for s in FINISHED if counts.get(s))
    line = f"{done}/{group['size']} done" + (f": {finished}" if finished else "")
    return line + f"; {counts.get('running', 0)} running, {counts.get('queued', 0)} queued"


def summary_line(summary: dict[str, Any] | None) -> str | None:
    """`val_accuracy (best, max): 0.85 ± 0.05 (sample std, n=10), best: member 3`."""
    if not summary:
        return None
    head = f"{summary['metric']} ({summary['reduce']}, {summary['mode']})"
    if not summary.get("n"):
        return f"{head}: no member has it yet"
    text = (
        f"{head}: {summary['mean']:.4g} ± {summary['std']:.4g} "
        f"(sample std, n={summary['n']}); min {summary['min']:.4g}, max {summary['max']:.4g}"
    )
    if summary.get("best_index") is not None:
        text += f"; best: member {summary['best_index']}"
    return text


def show_group(group: dict[str, Any]) -> None:
    """The members' table, the counts and the metric's mean ± std."""
    click.echo(f"group {group['id']} ({group['name']}, {group['family']})")
    rows = [
        (
            str(m["index"]),
            m["id"],
            f"{m['status']} ({m['phase']})" if m.get("phase") else m["status"],
            "" if m.get("value") is None else f"{m['value']:.4g}",
            " ".join(f"{k}={v}" for k, v in m["values"].items()),
        )
        for m in group["members"]
    ]
    metric = (group.get("summary") or {}).get("metric") or "VALUE"
    _table(("#", "JOB", "STATUS", metric.upper(), "SWEEP"), rows)
    click.echo(progress_line(group))
    line = summary_line(group.get("summary"))
    if line:
        click.echo(line)


def follow_group(
    client: ApiClient, group_id: str, params: dict[str, Any], interval: float
) -> dict[str, Any]:
    """Poll the group until every member finished: a line per change of its counts and a
    progress bar over the members (in a terminal); then its table. The final group."""
    from tqdm import tqdm

    bar = tqdm(total=None, unit="member", disable=None, leave=False)
    shown = None
    try:
        while True:
            group = client.request("GET", f"/groups/{group_id}", params=params)
            line = progress_line(group)
            done = sum(group["counts"].get(s, 0) for s in FINISHED)
            if line != shown:
                shown = line
                if bar.disable:
                    click.echo(line)
                else:
                    bar.total = group["size"]
                    bar.n = done
                    bar.set_description_str(line.split(";", 1)[1].strip())
                    bar.refresh()
                    bar.write(line, file=sys.stdout)
            if done >= group["size"]:
                break
            time.sleep(interval)
    finally:
        bar.close()
    show_group(group)
    return group


def _metric_params(metric: str | None, mode: str | None, reduce: str | None) -> dict[str, Any]:
    params = {"metric": metric, "mode": mode, "reduce": reduce}
    return {k: v for k, v in params.items() if v}


metric_option = click.option(
    "--metric", default=None, help="The metric to summarise (default: the group's)."
)
mode_option = click.option("--mode", type=click.Choice(["max", "min"]), default=None)
reduce_option = click.option(
    "--reduce",
    type=click.Choice(["best", "last", "summary"]),
    default=None,
    help="A member's value: best epoch, last epoch, or its summary (test metrics).",
)
interval_option = click.option(
    "--interval", type=float, default=2.0, show_default=True, help="Seconds between polls."
)


@click.command()
@spec_path_argument
@click.option(
    "--grid",
    multiple=True,
    metavar="KEY=VALUES",
    help="A grid axis: KEY=V1,V2,... or KEY=range:START:STOP[:STEP] (stop excluded) or "
    "KEY=[YAML list]; the grid is the product of its axes (repeatable).",
)
@click.option(
    "--zip",
    "zips",
    multiple=True,
    metavar="KEY=VALUES;KEY=VALUES",
    help="A zip block: its lists (of one length) go together item by item, the block is "
    "crossed with the grid (repeatable: one block each).",
)
@overrides_option
@click.option("--name", default=None, help="The group's name (default: the spec's).")
@metric_option
@click.option("-f", "--follow", is_flag=True, help="Show progress until every member finished.")
@interval_option
def sweep(
    spec_path: Path,
    grid: tuple[str, ...],
    zips: tuple[str, ...],
    overrides: tuple[str, ...],
    name: str | None,
    metric: str | None,
    follow: bool,
    interval: float,
) -> None:
    """Submit a sweep over SPEC_PATH as one job group (every member validated by the API first;
    nothing is stored if one is invalid). SPEC_PATH is a spec, or a group file with `spec` and
    `sweep` (see examples/mutag-10fold-group.yaml). Prints the group's id."""
    client = ApiClient.from_env()
    body = build_request(spec_path, grid, zips, overrides, name, metric)
    group = client.request("POST", "/groups", json=body)
    click.echo(f"queued {group['size']} members as group {group['id']}")
    if follow:
        final = follow_group(client, group["id"], {}, interval)
        _exit_unless_all_succeeded(final)


@click.command()
@click.argument("group_id")
@metric_option
@mode_option
@reduce_option
@click.option("-f", "--follow", is_flag=True, help="Show progress until every member finished.")
@interval_option
@click.option("--cancel", is_flag=True, help="Cancel every member not finished.")
@click.option("--json", "as_json", is_flag=True, help="The whole group as JSON.")
def group(
    group_id: str,
    metric: str | None,
    mode: str | None,
    reduce: str | None,
    follow: bool,
    interval: float,
    cancel: bool,
    as_json: bool,
) -> None:
    """Show a job group: its members, their states and the mean ± std of a metric."""
    import json

    client = ApiClient.from_env()
    params = _metric_params(metric, mode, reduce)
    if cancel:
        client.request("POST", f"/groups/{group_id}/cancel")
    if follow:
        _exit_unless_all_succeeded(follow_group(client, group_id, params, interval))
        return
    found = client.request("GET", f"/groups/{group_id}", params=params)
    if as_json:
        click.echo(json.dumps(found, indent=2))
    else:
        show_group(found)


@click.command()
@click.option("--limit", default=50, show_default=True)
def groups(limit: int) -> None:
    """List your job groups, newest first."""
    page = ApiClient.from_env().request("GET", "/groups", params={"limit": limit})
    rows = [
        (g["id"], g["name"], g["family"], progress_line(g), g["created_at"][:19])
        for g in page["data"]
    ]
    _table(("ID", "NAME", "FAMILY", "MEMBERS", "CREATED"), rows)


def _exit_unless_all_succeeded(group: dict[str, Any]) -> None:
    bad = {s: group["counts"].get(s, 0) for s in ("failed", "cancelled")}
    if any(bad.values()):
        text = ", ".join(f"{n} {s}" for s, n in bad.items() if n)
        raise click.ClickException(f"group {group['id']}: {text}")


GROUP_COMMANDS = (sweep, group, groups)
