"""The HTTP client commands: submit, jobs, status, metrics, logs, cancel, artifacts, download.

They talk to the API only (httpx); nothing here imports the store or the training core. The
service is found through `TRAINCTL_URL` and `TRAINCTL_API_KEY`, else the credentials file
`trainctl up` writes (`$TRAINCTL_HOME/credentials`, default `~/.trainctl/credentials`).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import click
import yaml

from cli.options import overrides_option, spec_path_argument

if TYPE_CHECKING:
    import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
FINISHED = ("succeeded", "failed", "cancelled")
RECONNECT_DELAY_S = 1.0


def credentials_path() -> Path:
    home = Path(os.environ.get("TRAINCTL_HOME") or "~/.trainctl").expanduser()
    return home / "credentials"


@dataclass
class ApiClient:
    """An httpx client for one service; errors become `click.ClickException`s."""

    url: str
    api_key: str | None
    timeout: float = 30.0

    @classmethod
    def from_env(cls) -> ApiClient:
        stored: dict[str, Any] = {}
        path = credentials_path()
        if path.is_file():
            try:
                stored = json.loads(path.read_text())
            except ValueError:
                raise click.ClickException(f"{path} is not valid JSON") from None
        url = os.environ.get("TRAINCTL_URL") or stored.get("url") or DEFAULT_URL
        key = os.environ.get("TRAINCTL_API_KEY") or stored.get("api_key")
        return cls(url.rstrip("/"), key)

    def _http(self, timeout: httpx.Timeout | float | None = None) -> httpx.Client:
        import httpx

        logging.getLogger("httpx").setLevel(logging.WARNING)  # no line per request
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        return httpx.Client(
            base_url=self.url,
            headers=headers,
            timeout=self.timeout if timeout is None else timeout,
        )

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """The JSON body of a successful request."""
        import httpx

        try:
            with self._http() as http:
                response = http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None
        check(response)
        return response.json()

    @classmethod
    def _unreachable(cls, exc: Exception) -> click.ClickException:
        return click.ClickException(
            f"cannot reach the trainctl API: {exc} (is `trainctl up` running? "
            "set TRAINCTL_URL to point elsewhere)"
        )

    @contextmanager
    def stream(self, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """A streamed GET without a read timeout, checked for errors. Errors while reading
        the body are left to the caller (`follow_job` reconnects)."""
        import httpx

        with self._http(httpx.Timeout(self.timeout, read=None)) as http:
            try:
                response = http.send(http.build_request("GET", path, **kwargs), stream=True)
            except httpx.TransportError as exc:
                raise self._unreachable(exc) from None
            try:
                if response.is_error:
                    response.read()
                    check(response)
                yield response
            finally:
                response.close()


def check(response: httpx.Response) -> None:
    """Raise a ClickException with the API's `detail` for a 4xx/5xx response."""
    if not response.is_error:
        return
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = response.text.strip() or response.reason_phrase
    hint = ""
    if response.status_code == 401:
        hint = f" (set TRAINCTL_API_KEY, or run `trainctl up`, which writes {credentials_path()})"
    raise click.ClickException(f"{response.status_code} {format_detail(detail)}{hint}")


def format_detail(detail: Any) -> str:
    """An API `detail`: a string, or a list of {loc, msg} (one line per field)."""
    if isinstance(detail, list):
        lines = []
        for item in detail:
            if isinstance(item, dict):
                loc = item.get("loc", "")
                loc = ".".join(map(str, loc)) if isinstance(loc, list) else str(loc)
                lines.append(f"  {loc or '<spec>'}: {item.get('msg', item)}")
            else:
                lines.append(f"  {item}")
        return "invalid request:\n" + "\n".join(lines)
    return str(detail)


def submit_spec(client: ApiClient, path: Path, overrides: Iterable[str]) -> dict[str, Any]:
    """POST the spec file (YAML or JSON) with `overrides` applied; the created job."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise click.ClickException(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise click.ClickException(f"{path}: a spec is a mapping of sections")
    # The spec's own override parser (pydantic and YAML only, no torch); the API validates.
    from core.spec import SpecError, apply_overrides

    try:
        data = apply_overrides(data, overrides)
    except SpecError as exc:
        raise click.BadParameter(str(exc), param_hint="--set") from None
    return client.request("POST", "/jobs", json=data)


def follow_job(client: ApiClient, job_id: str) -> dict[str, Any]:
    """Print each epoch's metrics as they arrive (Server-Sent Events, reconnecting after the
    last epoch seen); the finished job. ClickException if it did not succeed."""
    import httpx

    last_epoch: int | None = None
    while True:
        headers = {"Last-Event-ID": str(last_epoch)} if last_epoch is not None else {}
        try:
            for event, data in _sse_events(client, f"/jobs/{job_id}/metrics/stream", headers):
                if event == "metric":
                    payload = json.loads(data)
                    last_epoch = int(payload["epoch"])
                    click.echo(format_metrics(last_epoch, payload["values"]))
                elif event == "end":
                    return _finished(client, job_id)
        except httpx.HTTPError as exc:  # dropped stream: reconnect after the last epoch seen
            click.echo(f"(stream interrupted: {exc}; reconnecting)", err=True)
        time.sleep(RECONNECT_DELAY_S)


def _finished(client: ApiClient, job_id: str) -> dict[str, Any]:
    job = client.request("GET", f"/jobs/{job_id}")
    if job["status"] != "succeeded":
        reason = f": {job['error']}" if job.get("error") else ""
        raise click.ClickException(f"job {job_id} {job['status']}{reason}")
    click.echo(f"job {job_id} succeeded")
    return job


def _sse_events(client: ApiClient, path: str, headers: dict[str, str]) -> Iterator[tuple[str, str]]:
    """(event, data) pairs of a Server-Sent Events stream."""
    with client.stream(path, headers=headers) as response:
        event, data = "message", []
        for line in response.iter_lines():
            if not line:
                if data:
                    yield event, "\n".join(data)
                event, data = "message", []
            elif line.startswith(":"):
                continue
            else:
                field, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if field == "event":
                    event = value
                elif field == "data":
                    data.append(value)


def format_metrics(epoch: int, values: dict[str, Any]) -> str:
    parts = [f"epoch {epoch:>4}"]
    for key, value in values.items():
        if key in ("epoch",):
            continue
        parts.append(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}")
    return "  ".join(parts)


# --- commands -----------------------------------------------------------------------------------


@click.command()
@spec_path_argument
@overrides_option
@click.option(
    "-f",
    "--follow",
    is_flag=True,
    help="Print each epoch's metrics until the job ends; exit 1 unless it succeeds.",
)
def submit(spec_path: Path, overrides: tuple[str, ...], follow: bool) -> None:
    """Submit SPEC_PATH (YAML or JSON) as a job; prints its id."""
    client = ApiClient.from_env()
    job = submit_spec(client, spec_path, overrides)
    click.echo(job["id"])
    if follow:
        follow_job(client, job["id"])


@click.command()
@click.option("--status", "status_", type=click.Choice(["queued", "running", *FINISHED]))
@click.option("--limit", default=50, show_default=True)
def jobs(status_: str | None, limit: int) -> None:
    """List your jobs, newest first."""
    params: dict[str, Any] = {"limit": limit}
    if status_:
        params["status"] = status_
    page = ApiClient.from_env().request("GET", "/jobs", params=params)
    rows = [
        (j["id"], j["name"], j["status"], f"{j['progress']:.0%}", j["created_at"][:19])
        for j in page["data"]
    ]
    _table(("ID", "NAME", "STATUS", "PROGRESS", "CREATED"), rows)
    if page["count"] > len(rows):
        click.echo(f"({len(rows)} of {page['count']})")


@click.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="The whole job as JSON.")
def status(job_id: str, as_json: bool) -> None:
    """Show a job's state."""
    job = ApiClient.from_env().request("GET", f"/jobs/{job_id}")
    if as_json:
        click.echo(json.dumps(job, indent=2))
        return
    for key in (
        "id",
        "name",
        "family",
        "status",
        "attempt",
        "progress",
        "worker",
        "created_at",
        "started_at",
        "finished_at",
    ):
        value = job.get(key)
        if key == "progress":
            value = f"{value:.0%}"
        click.echo(f"{key + ':':<13}{'' if value is None else value}")
    if job.get("cancel_requested") and job["status"] == "running":
        click.echo("cancel:      requested")
    if job.get("error"):
        click.echo(f"error:       {job['error']}")


@click.command()
@click.argument("job_id")
@click.option("--attempt", type=int, default=None, help="Default: the latest.")
def metrics(job_id: str, attempt: int | None) -> None:
    """Print a job's metrics, one line per epoch."""
    params = {"attempt": attempt} if attempt else {}
    page = ApiClient.from_env().request("GET", f"/jobs/{job_id}/metrics", params=params)
    for row in page["data"]:
        click.echo(format_metrics(row["epoch"], row["values"]))
    if not page["data"]:
        click.echo(f"no metrics yet (job {page['status']})")


@click.command()
@click.argument("job_id")
@click.option("--tail", type=int, default=None, help="Only the last N lines.")
def logs(job_id: str, tail: int | None) -> None:
    """Print a job's training log."""
    client = ApiClient.from_env()
    params = {"tail": tail} if tail else {}
    with client.stream(f"/jobs/{job_id}/logs", params=params) as response:
        for chunk in response.iter_text():
            click.echo(chunk, nl=False)


@click.command()
@click.argument("job_id")
def cancel(job_id: str) -> None:
    """Cancel a queued job, or stop a running one."""
    job = ApiClient.from_env().request("POST", f"/jobs/{job_id}/cancel")
    state = "cancel requested" if job["status"] == "running" else job["status"]
    click.echo(f"job {job_id}: {state}")


@click.command()
@click.argument("job_id")
@click.option("--kind", default=None, help="Only artifacts of this kind (checkpoint, ...).")
def artifacts(job_id: str, kind: str | None) -> None:
    """List the files a job recorded: the names `trainctl download` takes."""
    params = {"kind": kind} if kind else {}
    page = ApiClient.from_env().request("GET", f"/jobs/{job_id}/artifacts", params=params)
    rows = [
        (
            a["name"],
            a["kind"],
            str(a["size"]),
            "" if a["epoch"] is None else str(a["epoch"]),
            a["tag"] or "",
        )
        for a in page["data"]
    ]
    if not rows:
        click.echo(f"no artifacts{f' of kind {kind}' if kind else ''} yet")
        return
    _table(("NAME", "KIND", "SIZE", "EPOCH", "TAG"), rows)


# Besides every artifact's own name, `trainctl download` takes these: the (newest) artifact of
# the kind of the same name, for a checkpoint the one tagged best (or `--name`).
DOWNLOAD_ALIASES = ("embeddings", "checkpoint")
FORMAT_SUFFIXES = {"npy": ".npy", "csv": ".csv"}


@click.command()
@click.argument("job_id")
@click.argument("name")
@click.option(
    "--name",
    "checkpoint",
    default=None,
    help="With NAME `checkpoint`: best (default), last or a checkpoint's name.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(sorted(FORMAT_SUFFIXES)),
    default=None,
    help="Embeddings: .npy array or CSV (<id column>,dim_0,...); default: OUTPUT's suffix, "
    "else npy.",
)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
def download(job_id: str, name: str, checkpoint: str | None, fmt: str | None, output: Path) -> None:
    """Download the job's artifact NAME to OUTPUT.

    NAME is a name `trainctl artifacts JOB_ID` lists, or `embeddings` (the embeddings) or
    `checkpoint` (the best checkpoint).
    """
    client = ApiClient.from_env()
    rows = client.request("GET", f"/jobs/{job_id}/artifacts")["data"]
    path, params = _download_target(job_id, name, rows, checkpoint, fmt, output)
    size = download_to(client, path, output, params)
    click.echo(f"wrote {output} ({size} bytes)")


def _download_target(
    job_id: str,
    name: str,
    rows: list[dict[str, Any]],
    checkpoint: str | None,
    fmt: str | None,
    output: Path,
) -> tuple[str, dict[str, Any]]:
    """The API path and query of `trainctl download`'s NAME, given the job's artifact rows;
    UsageError for a name the job does not have or options that do not apply to it."""
    kinds = {row["name"]: row["kind"] for row in rows}  # an artifact's name wins over an alias
    if name not in kinds and name not in DOWNLOAD_ALIASES:
        if not kinds:
            raise click.UsageError(f"job {job_id} has no artifacts yet")
        aliases = [a for a in DOWNLOAD_ALIASES if a in kinds.values()]  # named after their kind
        raise click.UsageError(
            f"job {job_id} has no artifact {name!r}; choose one of: {', '.join([*aliases, *kinds])}"
        )
    if checkpoint is not None and name != "checkpoint":
        raise click.UsageError("--name applies to NAME `checkpoint` only")
    is_embeddings = kinds.get(name, name) == "embeddings"
    if fmt is not None and not is_embeddings:
        raise click.UsageError(f"--format applies to embeddings only; {name!r} is downloaded as is")
    if name == "checkpoint" and name not in kinds:
        return f"/jobs/{job_id}/checkpoints/{quote(checkpoint or 'best', safe='/')}", {}
    if not is_embeddings:
        return f"/jobs/{job_id}/artifacts/{quote(name, safe='/')}", {}
    suffix = output.suffix.lower()
    if fmt is None:
        fmt = "csv" if suffix == ".csv" else "npy"
    elif suffix in FORMAT_SUFFIXES.values() and suffix != FORMAT_SUFFIXES[fmt]:
        raise click.UsageError(
            f"--format {fmt} writes {fmt.upper()}, but OUTPUT {output.name} ends in {suffix}; "
            f"name it *{FORMAT_SUFFIXES[fmt]} (or leave --format out: OUTPUT's suffix picks it)"
        )
    params: dict[str, Any] = {"format": fmt}
    if name in kinds:
        params["name"] = name
    return f"/jobs/{job_id}/embeddings", params


def download_to(client: ApiClient, path: str, output: Path, params: dict[str, Any]) -> int:
    """Stream `path` into `output` (via a temporary file) with a progress bar; bytes written."""
    from tqdm import tqdm

    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".part")
    written = 0
    try:
        with client.stream(path, params=params) as response:
            total = int(response.headers.get("content-length", 0)) or None
            with (
                tmp.open("wb") as f,
                tqdm(
                    total=total,
                    unit="B",
                    unit_scale=True,
                    desc=output.name,
                    disable=None,
                    leave=False,
                ) as bar,
            ):
                for chunk in response.iter_bytes(1 << 20):
                    f.write(chunk)
                    written += len(chunk)
                    bar.update(len(chunk))
        tmp.replace(output)
    finally:
        tmp.unlink(missing_ok=True)
    return written


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=False)]
    for row in (header, *rows):
        click.echo("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


CLIENT_COMMANDS = (submit, jobs, status, metrics, logs, cancel, artifacts, download)
