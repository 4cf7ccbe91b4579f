"""The HTTP client commands: submit, jobs, status, wait, metrics, logs, cancel, retry, delete,
artifacts, download, datasets.

They talk to the API only (httpx); nothing here imports the store or the training core. The
service is found through `TRAINCTL_URL` and `TRAINCTL_API_KEY`, else the credentials file
`trainctl up` writes (`$TRAINCTL_HOME/credentials`, default `~/.trainctl/credentials`).
"""

from __future__ import annotations

import json
import logging
import os
import sys
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
RECONNECT_WINDOW_S = 60.0  # how long `logs -f` keeps trying to reach an API that went away


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
        return response.json() if response.content else None

    @classmethod
    def _unreachable(cls, exc: Exception) -> click.ClickException:
        return ApiUnreachable(
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


class ApiUnreachable(click.ClickException):
    """The API did not answer (connection refused, timed out): not an error it returned."""


def check(response: httpx.Response) -> None:
    """Raise a ClickException with the API's `detail` for a 4xx/5xx response."""
    if not response.is_error:
        return
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = response.text.strip() or response.reason_phrase
    hint = ""
    if "relative to the data root" in str(detail):
        hint = (
            "\n  the service reads data paths relative to your uploads (`trainctl datasets "
            "list`), then to the workers' data roots (TRAINCTL_DATA_ROOT); upload a file of "
            "yours with `trainctl datasets upload NAME FILE` and name it NAME/FILE"
        )
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
    """Print the job's state as it goes (`queued (position N)`, then its phases), each epoch's
    metrics as they arrive (Server-Sent Events, reconnecting after the last epoch seen; a
    progress bar over the epochs in a terminal), then its result block; the finished job.
    ClickException if it did not succeed."""
    import httpx

    job = client.request("GET", f"/jobs/{job_id}")
    epochs = (job.get("spec") or {}).get("training", {}).get("epochs")
    view = _FollowView(epochs if isinstance(epochs, int) else None)
    last_epoch: int | None = None
    try:
        while True:
            headers = {"Last-Event-ID": str(last_epoch)} if last_epoch is not None else {}
            try:
                for event, data in _sse_events(
                    client, f"/jobs/{job_id}/metrics/stream?state=true", headers
                ):
                    if event == "metric":
                        payload = json.loads(data)
                        last_epoch = int(payload["epoch"])
                        view.epoch(last_epoch, payload["values"])
                    elif event == "state":
                        view.state(json.loads(data))
                    elif event == "end":
                        view.close()
                        return _finished(client, job_id)
            except httpx.HTTPError as exc:  # dropped stream: reconnect after the last epoch seen
                view.line(f"(stream interrupted: {exc}; reconnecting)", err=True)
            time.sleep(RECONNECT_DELAY_S)
    finally:
        view.close()


class _FollowView:
    """What `--follow` prints: state changes and metric lines, with a progress bar over the
    epochs while training when stderr is a terminal."""

    def __init__(self, epochs: int | None):
        self.epochs = epochs
        self.shown: str | None = None
        self.attempt = 1
        self.bar: Any = None
        self.done = 0

    def line(self, text: str, err: bool = False) -> None:
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr if err else sys.stdout)
        else:
            click.echo(text, err=err)

    def state(self, state: dict[str, Any]) -> None:
        self.attempt = state.get("attempt") or self.attempt
        text = describe_state(state, self.epochs)
        if text and text != self.shown:
            self.shown = text
            self.line(text)
        if state.get("phase") == "training" and self.epochs and self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(
                total=self.epochs, initial=self.done, unit="epoch", disable=None, leave=False
            )
            if self.bar.disable:
                self.bar = None
        elif state.get("phase") != "training":
            self.close()

    def epoch(self, epoch: int, values: dict[str, Any]) -> None:
        # The stream samples the job's phase; a short phase can pass between two samples. An
        # epoch row means training has begun, so say so before the first one.
        if not (self.shown or "").startswith("running: training"):
            self.state({"status": "running", "phase": "training", "attempt": self.attempt})
        self.line(format_metrics(epoch, values))
        if self.bar is not None and epoch > self.done:
            self.bar.update(epoch - self.done)
        self.done = max(self.done, epoch)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def describe_state(state: dict[str, Any], epochs: int | None = None) -> str | None:
    """`queued (position 2)`, `running: training (20 epochs)`, ...; None once finished."""
    status = state.get("status")
    if status == "queued":
        position = state.get("queue_position")
        return f"queued (position {position})" if position else "queued"
    if status != "running":
        return None
    phase = state.get("phase") or "starting"
    if phase == "training" and epochs:
        phase += f" ({epochs} epochs)"
    attempt = state.get("attempt") or 1
    return f"running: {phase}" + (f" (attempt {attempt})" if attempt > 1 else "")


def _finished(client: ApiClient, job_id: str) -> dict[str, Any]:
    job = client.request("GET", f"/jobs/{job_id}")
    if job["status"] == "succeeded":
        print_result(client, job)
    if job["status"] != "succeeded":
        reason = f": {job['error']}" if job.get("error") else ""
        raise click.ClickException(f"job {job_id} {job['status']}{reason}")
    click.echo(f"job {job_id} succeeded")
    return job


def fetch_summary(client: ApiClient, job_id: str) -> dict[str, Any] | None:
    """The run's summary (`GET /jobs/{id}/summary`), None if it has none (yet)."""
    try:
        return client.request("GET", f"/jobs/{job_id}/summary")
    except click.ClickException as exc:
        if str(exc.message).startswith("404"):
            return None
        raise


def print_result(client: ApiClient, job: dict[str, Any]) -> None:
    """The result block of a finished job whose run wrote its summary."""
    summary = fetch_summary(client, job["id"])
    if summary is not None:
        rows = client.request("GET", f"/jobs/{job['id']}/artifacts")["data"]
        click.echo(format_result(job, summary, {r["name"]: r["kind"] for r in rows}))


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def format_result(
    job: dict[str, Any], summary: dict[str, Any], kinds: dict[str, str] | None = None
) -> str:
    """How the run ended, its best epoch, the test metrics of the best checkpoint, its outputs
    and how to download them (`kinds`: the job's artifacts, name -> kind)."""
    kinds = kinds or {}
    job_id = job["id"]
    total = (job.get("spec") or {}).get("training", {}).get("epochs")
    done = summary.get("epochs_completed")
    of = f" of {total}" if total else ""
    if summary.get("stopped_early"):
        ran = f"stopped early at epoch {done}{of} (early_stopping)"
    else:
        ran = f"ran {done}{of} epochs" if done is not None else "finished"
    lines = ["result:", f"  training:   {ran}"]
    monitor, best_epoch = summary.get("monitor"), summary.get("best_epoch")
    if best_epoch is not None:
        score = summary.get("best_score")
        best = f"epoch {best_epoch}"
        if monitor:
            best += f", {monitor} {_number(score)}"
        if summary.get("best_checkpoint"):
            best += f" ({summary['best_checkpoint']}; the outputs come from it)"
        lines.append(f"  best:       {best}")
    metrics = summary.get("best_metrics") or {}
    if metrics:
        shown = "  ".join(f"{k}={_number(v)}" for k, v in metrics.items())
        lines.append(f"  test (best checkpoint): {shown}")
    else:
        reason = summary.get("test_metrics")
        lines.append(f"  test (best checkpoint): {reason if isinstance(reason, str) else 'none'}")
    quality = summary.get("quality")
    if isinstance(quality, dict) and quality.get("metric"):
        text = f"{quality['metric']} {_number(quality.get('value'))}"
        if quality.get("baseline") is not None:
            text += f" (baseline {_number(quality['baseline'])}"
            text += f": {quality['baseline_of']})" if quality.get("baseline_of") else ")"
        lines.append(f"  quality:    {text}")
    outputs = [o for o in summary.get("outputs") or [] if isinstance(o, str)]
    files = [o for o in outputs if not o.startswith("tensorboard/")]
    if any(o.startswith("tensorboard/") for o in outputs):
        files.append("tensorboard/")
    if files:
        lines.append(f"  outputs:    {', '.join(files)}")
    downloads = []
    if "embeddings" in kinds.values():
        downloads.append(f"trainctl download {job_id} embeddings -o embeddings.npy")
    if summary.get("best_checkpoint"):
        downloads.append(f"trainctl download {job_id} checkpoint -o best.pt")
    for name in files:
        if name not in kinds or kinds[name] in ("embeddings", "plot"):
            continue  # not recorded (nothing to download), or offered above
        if len(downloads) >= 4:
            break
        downloads.append(f"trainctl download {job_id} {name} -o {Path(name).name}")
    downloads.append(f"trainctl artifacts {job_id}   (every file it recorded)")
    lines.append(f"  download:   {downloads[0]}")
    lines += [f"              {d}" for d in downloads[1:]]
    return "\n".join(lines)


def _sse_events(client: ApiClient, path: str, headers: dict[str, str]) -> Iterator[tuple[str, str]]:
    """(event, data) pairs of a Server-Sent Events stream."""
    with client.stream(path, headers=headers) as response:
        for event, data, _ in _sse_stream(response):
            yield event, data


def _sse_stream(response: httpx.Response) -> Iterator[tuple[str, str, str | None]]:
    """(event, data, id) of each event of a Server-Sent Events response."""
    event, data, event_id = "message", [], None
    for line in response.iter_lines():
        if not line:
            if data:
                yield event, "\n".join(data), event_id
            event, data, event_id = "message", [], None
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                event = value
            elif field == "data":
                data.append(value)
            elif field == "id":
                event_id = value


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
        (
            j["id"],
            j["name"],
            f"{j['status']} ({j['phase']})" if j.get("phase") else j["status"],
            f"{j['progress']:.0%}",
            j["created_at"][:19],
        )
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
    client = ApiClient.from_env()
    job = client.request("GET", f"/jobs/{job_id}")
    if as_json:
        click.echo(json.dumps(job, indent=2))
        return
    for key in (
        "id",
        "name",
        "family",
        "status",
        "phase",
        "queue_position",
        "attempt",
        "progress",
        "worker",
        "created_at",
        "started_at",
        "finished_at",
    ):
        value = job.get(key)
        if key in ("phase", "queue_position") and value is None:
            continue  # only while running / queued
        if key == "progress":
            value = f"{value:.0%}"
        label = "position:" if key == "queue_position" else key + ":"
        click.echo(f"{label:<13}{'' if value is None else value}")
    if job.get("cancel_requested") and job["status"] == "running":
        click.echo("cancel:      requested")
    if job.get("error"):
        click.echo(f"error:       {job['error']}")
    if job["status"] in FINISHED:
        print_result(client, job)


@click.command()
@click.argument("job_id")
@click.option("--attempt", type=int, default=None, help="Default: the latest.")
@click.option(
    "-f",
    "--follow",
    is_flag=True,
    help="Then keep printing them as they arrive until the job ends (its state and result "
    "too); exit 1 unless it succeeds.",
)
def metrics(job_id: str, attempt: int | None, follow: bool) -> None:
    """Print a job's metrics, one line per epoch."""
    client = ApiClient.from_env()
    if follow:
        if attempt:
            raise click.UsageError("--follow shows the latest attempt; leave out --attempt")
        follow_job(client, job_id)
        return
    params = {"attempt": attempt} if attempt else {}
    page = client.request("GET", f"/jobs/{job_id}/metrics", params=params)
    for row in page["data"]:
        click.echo(format_metrics(row["epoch"], row["values"]))
    if not page["data"]:
        click.echo(f"no metrics yet (job {page['status']})")


@click.command()
@click.argument("job_id")
@click.option(
    "--tail",
    type=click.IntRange(min=0),
    default=None,
    help="Only the last N lines (with -f, 0 starts at the log's current end).",
)
@click.option(
    "-f",
    "--follow",
    is_flag=True,
    help="Keep printing new lines until the job ends (reconnecting where it left off).",
)
def logs(job_id: str, tail: int | None, follow: bool) -> None:
    """Print a job's training log (with -f: the whole log so far, or its last --tail lines,
    then each line as it is written, until the job ends)."""
    client = ApiClient.from_env()
    if follow:
        follow_logs(client, job_id, tail)
        return
    if tail == 0:
        return
    params = {"tail": tail} if tail else {}
    with client.stream(f"/jobs/{job_id}/logs", params=params) as response:
        for chunk in response.iter_text():
            click.echo(chunk, nl=False)


def follow_logs(client: ApiClient, job_id: str, tail: int | None = None) -> None:
    """Print the log's lines as the run writes them (`/logs/stream`) until the job ends. After
    a dropped connection, or an API that went away for less than `RECONNECT_WINDOW_S` (a
    restart), it reconnects and resumes at the byte offset of the last event (`Last-Event-ID`):
    no line is printed twice or skipped. `tail=0` starts at the log's current end."""
    import httpx

    offset: str | None = None
    connected = False
    unreachable_since: float | None = None
    while True:
        headers = {"Last-Event-ID": offset} if offset is not None else {}
        params = {"tail": tail} if tail is not None and offset is None else {}
        try:
            with client.stream(f"/jobs/{job_id}/logs/stream", headers=headers, params=params) as r:
                connected, unreachable_since = True, None
                for event, data, event_id in _sse_stream(r):
                    if event == "log":
                        click.echo(data)
                        offset = event_id or offset
                    elif event == "end":
                        return
        except httpx.HTTPError as exc:
            click.echo(f"(stream interrupted: {exc}; reconnecting)", err=True)
        except ApiUnreachable:
            now = time.monotonic()
            unreachable_since = unreachable_since or now
            if not connected or now - unreachable_since > RECONNECT_WINDOW_S:
                raise
        time.sleep(RECONNECT_DELAY_S)


# `trainctl wait` exit statuses, for scripts.
WAIT_EXIT = {"succeeded": 0, "failed": 1, "cancelled": 3}
WAIT_TIMEOUT_EXIT = 4
WAIT_ERROR_EXIT = 5


@click.command()
@click.argument("job_id")
@click.option(
    "--timeout",
    type=float,
    default=None,
    help="Give up after this many seconds (exit status 4).",
)
@click.option(
    "--interval", type=float, default=2.0, show_default=True, help="Seconds between checks."
)
@click.option("-q", "--quiet", is_flag=True, help="Print nothing; the exit status tells.")
def wait(job_id: str, timeout: float | None, interval: float, quiet: bool) -> None:
    """Wait until a job ends; its outcome is the exit status.

    \b
    0  succeeded
    1  failed
    3  cancelled
    4  --timeout passed first (the job goes on)
    5  the job could not be read (no such job, API unreachable, bad key)
    2  bad usage (as every command)
    """
    client = ApiClient.from_env()
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        try:
            job = client.request("GET", f"/jobs/{job_id}")
        except click.ClickException as exc:
            click.echo(f"Error: {exc.format_message()}", err=True)
            sys.exit(WAIT_ERROR_EXIT)
        if job["status"] in FINISHED:
            break
        if deadline is not None and time.monotonic() >= deadline:
            if not quiet:
                click.echo(f"job {job_id} still {job['status']} after {timeout:g}s", err=True)
            sys.exit(WAIT_TIMEOUT_EXIT)
        time.sleep(
            interval if deadline is None else max(0.0, min(interval, deadline - time.monotonic()))
        )
    if not quiet:
        reason = f": {job['error']}" if job.get("error") else ""
        click.echo(f"job {job_id} {job['status']}{reason}")
    sys.exit(WAIT_EXIT[job["status"]])


@click.command()
@click.argument("job_id")
@click.option("-f", "--follow", is_flag=True, help="Then follow it as `submit --follow` does.")
def retry(job_id: str, follow: bool) -> None:
    """Queue a failed or cancelled job again, as a new attempt that resumes from its last
    checkpoint (same id, spec and run directory)."""
    client = ApiClient.from_env()
    job = client.request("POST", f"/jobs/{job_id}/retry")
    click.echo(f"job {job_id}: {describe_state(job) or job['status']}")
    if follow:
        follow_job(client, job_id)


@click.command()
@click.argument("job_ids", nargs=-1, required=True, metavar="JOB_ID...")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
def delete(job_ids: tuple[str, ...], yes: bool) -> None:
    """Delete finished jobs with their metrics, checkpoints, outputs and logs."""
    if not yes:
        click.confirm(
            f"Delete {len(job_ids)} job(s) and all their files? This cannot be undone",
            abort=True,
        )
    client = ApiClient.from_env()
    for job_id in job_ids:
        client.request("DELETE", f"/jobs/{job_id}")
        click.echo(f"job {job_id}: deleted")


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
FORMAT_SUFFIXES = {
    "npy": ".npy",
    "csv": ".csv",
    "parquet": ".parquet",
    "safetensors": ".safetensors",
}


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
    help="Embeddings: .npy array, CSV (<id column>,dim_0,...), Parquet (id, embedding) or "
    "safetensors (ids in its metadata); default: OUTPUT's suffix, else npy.",
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
        by_suffix = {v: k for k, v in FORMAT_SUFFIXES.items()}
        fmt = by_suffix.get(suffix, "npy")
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


@click.group()
def datasets() -> None:
    """Your uploaded datasets: what a spec's `data.path` names as `NAME/FILE`."""


@datasets.command("list")
def datasets_list() -> None:
    """List your uploads."""
    page = ApiClient.from_env().request("GET", "/datasets")
    rows = [(d["name"], d["path"], str(d["size"]), d["created_at"][:19]) for d in page["data"]]
    if not rows:
        click.echo("no datasets yet (trainctl datasets upload NAME FILE)")
        return
    _table(("NAME", "DATA.PATH", "SIZE", "UPLOADED"), rows)


@datasets.command("upload")
@click.argument("name")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["edge_list"]),
    default=None,
    help="Check the file with the training reader first (a bad line is refused).",
)
@click.option("--comment", default=None, help="edge_list: comment prefix, e.g. '#'.")
@click.option("--replace", is_flag=True, help="Replace the file of an existing dataset NAME.")
def datasets_upload(
    name: str, file: Path, fmt: str | None, comment: str | None, replace: bool
) -> None:
    """Upload FILE as dataset NAME; prints the `data.path` a spec names it by."""
    form = {k: v for k, v in (("name", name), ("format", fmt), ("comment", comment)) if v}
    client = ApiClient.from_env()
    with file.open("rb") as fh:
        files = {"file": (file.name, fh, "application/octet-stream")}
        if replace:
            dataset = client.request("PUT", f"/datasets/{quote(name)}", data=form, files=files)
        else:
            dataset = client.request("POST", "/datasets", data=form, files=files)
    click.echo(f"dataset {name}: {dataset['size']} bytes; in a spec: data.path: {dataset['path']}")


@datasets.command("delete")
@click.argument("name")
def datasets_delete(name: str) -> None:
    """Delete dataset NAME (refused while a queued or running job of yours reads it)."""
    ApiClient.from_env().request("DELETE", f"/datasets/{quote(name)}")
    click.echo(f"dataset {name}: deleted")


@click.command()
@click.argument("job_id")
@click.argument("row_id")
@click.option("-k", "k", type=click.IntRange(1, 1000), default=10, show_default=True)
@click.option("--metric", type=click.Choice(["cosine", "dot"]), default="cosine", show_default=True)
def neighbors(job_id: str, row_id: str, k: int, metric: str) -> None:
    """The K rows of JOB_ID's embeddings nearest to the row ROW_ID (a node, graph, text or site
    id as the embeddings CSV keys it), best first."""
    body = ApiClient.from_env().request(
        "GET",
        f"/jobs/{job_id}/embeddings/neighbors",
        params={"id": row_id, "k": k, "metric": metric},
    )
    rows = [(str(i), n["id"], f"{n['score']:.4f}") for i, n in enumerate(body["data"], 1)]
    _table(("RANK", "ID", metric.upper()), rows)


@click.command()
@click.argument("job_a")
@click.argument("job_b")
@click.option("-k", "k", type=click.IntRange(1, 100), default=10, show_default=True)
def compare(job_a: str, job_b: str, k: int) -> None:
    """How much the embeddings of two jobs over the same ids agree: linear CKA (1: the same up
    to rotation and scale) and the mean overlap of each row's K nearest neighbours."""
    body = ApiClient.from_env().request(
        "GET", "/compare/embeddings", params={"a": job_a, "b": job_b, "k": k}
    )
    click.echo(f"common ids      {body['common_ids']}")
    click.echo(f"linear CKA      {body['linear_cka']:.4f}")
    click.echo(f"kNN overlap@{k:<3} {body['knn_overlap']:.4f} (over {body['query_rows']} rows)")


CLIENT_COMMANDS = (
    submit,
    jobs,
    status,
    wait,
    metrics,
    logs,
    cancel,
    retry,
    delete,
    artifacts,
    download,
    neighbors,
    compare,
    datasets,
)
