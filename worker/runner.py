"""Run one job: claim it, launch the training process group, report what it writes, finish it.

The training process never talks to the database. It appends `metrics.jsonl` and
`artifacts.jsonl` in its run directory; `run_job` tails both (remembering offsets) and turns
each line into a row, checks for a cancel request, and records the outcome:

- exit code 0: `succeeded`, after a last read of both files;
- any other exit: `failed`, with the root cause from `error*.json` (else the log's last lines);
- a cancel request: the group gets SIGTERM, SIGKILL after a grace period, then `cancelled`;
- the worker shutting down: the same stop, then the job goes back to `queued` (`REQUEUED`) and
  the task hands its message back, so another worker resumes it from its last checkpoint;
- an attempt running past `resources.max_duration`: stopped, `failed` (class `timeout`).

A failed attempt is classed (`worker.policy`); if the job's retry policy covers the class and
attempts remain, the job goes back to `queued` with the error, and the task sends itself again
after the policy's back-off (`Later`).

The database may go away (a restart, a fail-over): a claim that fails is tried again later
(`DB_UNAVAILABLE`; the task retries with back-off, its message is never dropped), and a run
being supervised rides out up to `TRAINCTL_DB_OUTAGE_SECONDS`: the training process is left
alone, the lines read meanwhile stay buffered and are written, in order, once the database
answers again. Errors are stored as a client may see them (`store.redact`); the full text goes
to the log.

Each line is parsed with the run contract's parsers (`core.report`): epoch metric records become
`metrics` rows, step records `metric_steps` rows, artifact events `artifacts` rows (with their
`meta`), phase events (`events.jsonl`) the job's `phase`. A line that is not a valid event is
logged and skipped; it never fails the job.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TypeVar

import yaml
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

# Imported when the worker starts, not between claiming a job and its first heartbeat:
# `core.launch` imports torch, which takes seconds.
from core.launch import training_command
from core.report import (
    ARTIFACT_KINDS,
    EVENTS_FILE,
    ArtifactEvent,
    MetricsRecord,
    PhaseEvent,
    RunEventError,
    parse_artifact_line,
    parse_metrics_line,
    parse_phase_line,
)
from store import queries
from store.db import session_scope
from store.exports import job_embeddings, keep_exports
from store.models import Artifact, Job, JobStatus, Owner
from store.paths import owner_upload_dir, run_dir
from store.redact import known_places, redact
from store.settings import Settings
from worker.policy import FailureClass, RetryPolicy, classify
from worker.process import TrainingProcess
from worker.tail import JsonlTail

log = logging.getLogger(__name__)

REQUEUED = "requeued"
LOST = "lost"  # the job was taken from this worker (see `worker.recovery`)
DB_UNAVAILABLE = "database unavailable"  # the claim failed: try the message again later
DEFERRED = "deferred"  # the owner's running-jobs limit: try the message again later
RETRY = "retry"  # the attempt failed, the retry policy runs it again later
LOG_FILE = "logs.txt"
SPEC_FILE = "spec.yaml"
LOG_TAIL_LINES = 30
LOG_TAIL_BYTES = 64 * 1024
ERROR_FILE = re.compile(r"error(-rank\d+)?\.json")  # what `core.run` writes on failure
MAX_INT = 2**31 - 1  # epochs and steps are 32-bit integers in the database
MAX_BIGINT = 2**63 - 1

T = TypeVar("T")

# (spec path, run dir, devices, resume) -> argv; `core.launch.training_command` by default.
CommandFactory = Callable[[Path, Path, int, bool], Sequence[str]]


class Later(str):
    """An outcome after which the task sends its message again in `delay` seconds
    (`DB_UNAVAILABLE`, `DEFERRED`, `RETRY`)."""

    delay: float

    def __new__(cls, value: str, delay: float = 0.0) -> Later:
        outcome = super().__new__(cls, value)
        outcome.delay = delay
        return outcome


def default_command(spec_path: Path, out_dir: Path, devices: int, resume: bool) -> list[str]:
    return training_command(spec_path, out_dir, devices, resume=resume)


def _setting_default(name: str) -> float:
    return Settings.model_fields[name].default


@dataclass(frozen=True)
class RunnerOptions:
    """How a worker supervises a run; `from_settings` takes them from the `Settings` (the
    `TRAINCTL_*_SECONDS` variables), whose defaults these are."""

    poll_seconds: float = _setting_default("poll_seconds")
    heartbeat_seconds: float = _setting_default("heartbeat_seconds")
    cancel_grace_seconds: float = _setting_default("cancel_grace_seconds")
    # A running job silent this long lost its worker (`worker.recovery`).
    stale_after_seconds: float = _setting_default("stale_after_seconds")

    @classmethod
    def from_settings(cls, settings: Settings) -> RunnerOptions:
        return cls(**{f.name: getattr(settings, f.name) for f in fields(cls)})


@dataclass
class WorkerContext:
    """What every task of one worker process shares."""

    settings: Settings
    sessions: sessionmaker[Session]
    options: RunnerOptions = field(default_factory=RunnerOptions)
    name: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    shutdown: threading.Event = field(default_factory=threading.Event)
    command: CommandFactory = default_command


def run_job(job_id: str, ctx: WorkerContext) -> str | None:
    """Run job `job_id` to its end; the final status, `REQUEUED`, a `Later` outcome (send the
    message again after its delay), or None if not claimed."""
    if ctx.shutdown.is_set():  # delivered while the worker stops: leave it to the next one
        return REQUEUED
    try:
        with session_scope(ctx.sessions) as session:
            job = queries.claim_job(
                session, job_id, ctx.name, max_running=ctx.settings.max_running_per_owner
            )
            if job is None:
                log.info("job %s: not queued (a duplicate delivery, or cancelled); skip", job_id)
                return None
            owner = session.get(Owner, job.owner_id)
            upload_dir = owner_upload_dir(ctx.settings, owner.name) if owner else None
    except queries.RunningLimitReached as exc:
        log.info("%s", exc)
        return Later(DEFERRED, ctx.settings.quota_retry_after_seconds)
    except OperationalError as exc:
        log.warning("job %s: database unavailable, not claimed; tried again later: %s", job_id, exc)
        return Later(DB_UNAVAILABLE)
    log.info("job %s: attempt %d on %s", job_id, job.attempt, ctx.name)
    try:
        return _Run(job, ctx, upload_dir).run()
    except Exception as exc:
        # A bug or an outage on our side: the job must not stay `running` for ever.
        log.exception("job %s: the worker failed while running it", job_id)
        with session_scope(ctx.sessions) as session:
            queries.finish_job(
                session,
                job_id,
                JobStatus.FAILED,
                f"worker error: {type(exc).__name__}: {redact(str(exc))}",
                FailureClass.INFRASTRUCTURE,
            )
        return JobStatus.FAILED


class _Run:
    """One attempt of one job, from launch to the recorded outcome."""

    def __init__(self, job: Job, ctx: WorkerContext, upload_dir: Path | None):
        self.job_id = job.id
        self.attempt = job.attempt
        self.ctx = ctx
        self.dir = run_dir(ctx.settings, job)
        self.run_dir_rel = job.run_dir
        self.epochs = int(job.spec.get("training", {}).get("epochs", 0)) or None
        self.devices = int(job.spec.get("resources", {}).get("devices", 1))
        self.spec = job.spec
        self.upload_dir = upload_dir
        self.progress = 0.0
        max_duration = job.spec.get("resources", {}).get("max_duration")
        self.max_duration = float(max_duration) if max_duration else None
        self.policy = RetryPolicy.of(job.spec)
        # Parsed lines not yet in the database (kept across a database outage), in file order.
        self.pending: list[tuple[str, object]] = []
        self.outage_since: float | None = None  # monotonic time of the first failed write
        self.next_db_try = 0.0
        self.db_failures = 0

    def run(self) -> str:
        self.dir.mkdir(parents=True, exist_ok=True)
        spec_path = self.dir / SPEC_FILE
        spec_path.write_text(yaml.safe_dump(self.spec, sort_keys=False))
        self._archive_errors()
        log_path = self.dir / LOG_FILE
        with log_path.open("a") as f:
            f.write(f"=== trainctl: attempt {self.attempt} on {self.ctx.name} ===\n")
        self.log_offset = log_path.stat().st_size
        # One run directory per job: a later attempt resumes from the checkpoints of the earlier
        # ones, and reads only the lines it appends itself.
        self.metrics = JsonlTail.from_end(self.dir / "metrics.jsonl")
        self.artifacts = JsonlTail.from_end(self.dir / "artifacts.jsonl")
        self.events = JsonlTail.from_end(self.dir / EVENTS_FILE)
        argv = self.ctx.command(spec_path, self.dir, self.devices, self.attempt > 1)
        self._heartbeat()
        self.started = time.monotonic()
        proc = TrainingProcess(argv, cwd=self.dir, env=self._env(), log_path=log_path)
        try:
            outcome = self._supervise(proc)
        except BaseException:
            # The worker itself failed (database gone, cold shutdown): leave no run behind.
            proc.stop(self.ctx.options.cancel_grace_seconds)
            raise
        self._drain()
        return self._finish(outcome)

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        roots = [str(r) for r in self.ctx.settings.data_roots]
        if not roots:
            from core.data.roots import data_roots

            roots = [str(r) for r in data_roots()]
        if self.upload_dir is not None:
            roots.insert(0, str(self.upload_dir))
        env["TRAINCTL_DATA_ROOT"] = os.pathsep.join(roots)
        env["PYTHONUNBUFFERED"] = "1"
        # `python -m core.run` must import this checkout's `core` from any working directory.
        source_root = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (source_root, env.get("PYTHONPATH")) if p)
        return env

    def _error_files(self) -> list[Path]:
        """This attempt's `error.json` / `error-rankK.json`, the first written first."""
        paths = [p for p in self.dir.glob("error*.json") if ERROR_FILE.fullmatch(p.name)]
        return sorted(paths, key=lambda p: p.stat().st_mtime)

    def _archive_errors(self) -> None:
        """Rename an earlier attempt's error files so they are not taken for this one's."""
        for path in self._error_files():
            path.rename(path.with_name(f"{path.stem}.attempt-{self.attempt - 1}.json"))

    def _supervise(self, proc: TrainingProcess) -> str | int:
        """Report until the process exits (its exit code) or must stop (cancelled/requeued)."""
        opts = self.ctx.options
        next_beat = time.monotonic() + opts.heartbeat_seconds
        while True:
            code = proc.poll()
            self._drain(wait=False)
            if code is not None:
                return proc.reap()
            proc.scan()
            if self.ctx.shutdown.is_set():
                log.warning("job %s: worker shutting down; stopping the run", self.job_id)
                proc.stop(opts.cancel_grace_seconds)
                return REQUEUED
            if self.max_duration and time.monotonic() - self.started > self.max_duration:
                log.warning("job %s: past resources.max_duration; stopping the run", self.job_id)
                proc.stop(opts.cancel_grace_seconds)
                return FailureClass.TIMEOUT
            was_down = self.outage_since is not None
            cancel = self._db("check for a cancel", queries.cancel_requested, self.job_id)
            if cancel:
                log.info("job %s: cancel requested; stopping the run", self.job_id)
                proc.stop(opts.cancel_grace_seconds)
                return JobStatus.CANCELLED
            # Right after an outage, a heartbeat at once: the orphan sweep must see it first.
            if time.monotonic() >= next_beat or (was_down and self.outage_since is None):
                next_beat = time.monotonic() + opts.heartbeat_seconds
                if self._heartbeat() is False:
                    log.warning("job %s: no longer ours; stopping the run", self.job_id)
                    proc.stop(opts.cancel_grace_seconds)
                    return LOST
            time.sleep(opts.poll_seconds)

    def _db(
        self, what: str, query: Callable[..., T], *args: object, wait: bool = False
    ) -> T | None:
        """`query(session, *args)` in a transaction of its own; None while the database is
        unreachable (`OperationalError`): logged once per outage, tried again with back-off (1,
        then 2 s between tries; with `wait`, this call sleeps and tries until it
        works). Raises the error once the outage is longer than `TRAINCTL_DB_OUTAGE_SECONDS`."""
        limit = self.ctx.settings.db_outage_seconds
        while True:
            now = time.monotonic()
            if self.outage_since is not None and now < self.next_db_try and not wait:
                return None
            if wait and now < self.next_db_try:
                time.sleep(self.next_db_try - now)
            try:
                with session_scope(self.ctx.sessions) as session:
                    result = query(session, *args)
            except OperationalError as exc:
                now = time.monotonic()
                if self.outage_since is None:
                    self.outage_since = now
                    log.warning(
                        "job %s: database unreachable (%s); the run goes on, its reports are "
                        "buffered: %s",
                        self.job_id,
                        what,
                        str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                    )
                if now - self.outage_since > limit:
                    log.error("job %s: database unreachable for over %.0fs", self.job_id, limit)
                    raise
                self.db_failures += 1
                self.next_db_try = now + min(2.0 ** (self.db_failures - 1), 2.0)
                if not wait:
                    return None
                continue
            if self.outage_since is not None:
                log.warning(
                    "job %s: database back after %.1fs; writing %d buffered reports",
                    self.job_id,
                    time.monotonic() - self.outage_since,
                    len(self.pending),
                )
                self.outage_since = None
                self.db_failures = 0
            return result

    def _heartbeat(self) -> bool | None:
        """Refresh `updated_at` (the liveness the orphan sweep reads); False if the job was
        taken from this worker, None if the database did not answer."""

        def beat(session: Session) -> bool:
            queries.set_progress(session, self.job_id, self.progress)
            job = queries.get_job(session, self.job_id)
            return (
                job is not None
                and job.status == JobStatus.RUNNING
                and job.worker == self.ctx.name
                and job.attempt == self.attempt
            )

        return self._db("heartbeat", beat)

    def _drain(self, wait: bool = True) -> None:
        """Turn the new lines of `metrics.jsonl` and `artifacts.jsonl` into rows, and those of
        `events.jsonl` into the job's phase. While the database is unreachable they wait in
        `pending` (with `wait`, this call waits for the database)."""
        metric_lines = self.metrics.read_lines()
        event_lines = self.artifacts.read_lines()
        phase_lines = self.events.read_lines()
        self.pending += [
            ("metric", r) for r in self._parsed(metric_lines, "metrics.jsonl", _metrics_record)
        ]
        self.pending += [
            ("artifact", e) for e in self._parsed(event_lines, "artifacts.jsonl", _artifact_event)
        ]
        phases: list[PhaseEvent] = self._parsed(phase_lines, EVENTS_FILE, parse_phase_line)
        if phases:  # only the latest matters
            self.pending.append(("phase", phases[-1]))
        if not self.pending:
            return
        batch = self.pending
        written = self._db("metrics and artifacts", self._write, batch, wait=wait)
        if written is not None:
            del self.pending[: len(batch)]

    def _write(self, session: Session, batch: list[tuple[str, object]]) -> bool:
        """Write buffered reports in one transaction (all rows are upserts: writing a batch
        again after a failed commit changes nothing)."""
        progressed = False
        for kind, item in batch:
            if kind == "phase":
                assert isinstance(item, PhaseEvent)
                queries.set_phase(session, self.job_id, item.phase)
            elif kind == "artifact":
                assert isinstance(item, ArtifactEvent)
                self._artifact(session, item)
            else:
                record = item
                assert isinstance(record, MetricsRecord)
                if record.granularity == "step":
                    queries.upsert_metric_step(
                        session, self.job_id, self.attempt, record.step, record.epoch, record.values
                    )
                    continue
                values = {"step": record.step, **record.values}
                queries.upsert_metric(session, self.job_id, self.attempt, record.epoch, values)
                if self.epochs:
                    self.progress = min(record.epoch / self.epochs, 1.0)
                progressed = True
        if progressed:
            queries.set_progress(session, self.job_id, self.progress)
        return True

    def _parsed(self, lines: list[str], file: str, parse: Callable[[str], T]) -> list[T]:
        """`parse(line)` of each line; a line that is not a valid event is logged and skipped."""
        parsed: list[T] = []
        for line in lines:
            try:
                parsed.append(parse(line))
            except (RunEventError, ValueError, TypeError, OverflowError) as exc:
                # ValueError etc.: a field of the wrong type (`"size": "big"`).
                log.warning(
                    "job %s: skipping a bad %s line (%s): %.200r", self.job_id, file, exc, line
                )
        return parsed

    def _artifact(self, session: Session, event: ArtifactEvent) -> None:
        name = event.path
        if event.event == "deleted":
            queries.delete_artifact(session, self.job_id, name)
            return
        if event.kind not in ARTIFACT_KINDS:  # recorded all the same: the file is there
            log.warning("job %s: artifact %s of unknown kind %r", self.job_id, name, event.kind)
        queries.upsert_artifact(
            session,
            self.job_id,
            kind=event.kind,
            name=name,
            path=f"{self.run_dir_rel}/{name}",
            size=event.size,
            sha256=event.sha256,
            epoch=event.epoch,
            tag=event.tag,
            meta=event.meta,
        )

    def _finish(self, outcome: str | int) -> str:
        status: str
        error: str | None = None
        failure: FailureClass | None = None
        if outcome == REQUEUED:
            if self._db("requeue", queries.requeue_job, self.job_id, wait=True):
                log.info("job %s: back in the queue", self.job_id)
                return REQUEUED
            status = JobStatus.CANCELLED  # requeue refused: a cancel was requested meanwhile
        elif outcome == LOST:
            return LOST
        elif outcome == JobStatus.CANCELLED:
            status = JobStatus.CANCELLED
        elif outcome == 0:
            status = JobStatus.SUCCEEDED
            self._keep_exports()
        elif outcome == FailureClass.TIMEOUT:
            status, failure = JobStatus.FAILED, FailureClass.TIMEOUT
            error = (
                f"the attempt ran longer than resources.max_duration ({self.max_duration:g} s) "
                "and was stopped"
            )
        else:
            status = JobStatus.FAILED
            error, failure = self._root_cause(int(outcome))
        if error is not None:
            log.info("job %s: attempt %d failed: %s", self.job_id, self.attempt, error)
            error = redact(error, self._places())
        if failure is not None and self.policy.retries(failure, self.attempt):
            delay = self.policy.delay(self.attempt)
            if self._db(
                "requeue for a retry",
                queries.requeue_failed_job,
                self.job_id,
                error,
                failure,
                delay,
                wait=True,
            ):
                log.info(
                    "job %s: attempt %d failed (%s); retried in %.0fs (attempt %d of %d)",
                    self.job_id,
                    self.attempt,
                    failure,
                    delay,
                    self.attempt + 1,
                    self.policy.max_attempts,
                )
                return Later(RETRY, delay)
        self._db("finish", queries.finish_job, self.job_id, status, error, failure, wait=True)
        log.info(
            "job %s: %s%s", self.job_id, status, f" ({error.splitlines()[0]})" if error else ""
        )
        return status

    def _keep_exports(self) -> None:
        """The embeddings in the formats `TRAINCTL_EXPORT_FORMATS` names, written beside the
        run before it is marked succeeded: a finished job's downloads are file reads."""
        formats = self.ctx.settings.export_formats
        if not formats:
            return
        root = self.ctx.settings.artifact_root
        sources = self._db("embeddings to keep", job_embeddings, root, self.job_id, wait=True)
        if not sources:
            return
        log.info("job %s: converting embeddings to %s", self.job_id, ", ".join(formats))
        every = self.ctx.options.heartbeat_seconds
        next_beat = time.monotonic() + every

        def beat() -> None:  # the orphan sweep must not take a long conversion for a lost job
            nonlocal next_beat
            if time.monotonic() >= next_beat:
                self._heartbeat()
                next_beat = time.monotonic() + every

        keep_exports(sources, formats, beat)

    def _places(self) -> list[tuple[Path, str, str]]:
        roots = self._env()["TRAINCTL_DATA_ROOT"].split(os.pathsep)
        return known_places(
            self.ctx.settings,
            upload_dir=self.upload_dir,
            run_dir=self.dir,
            data_roots=[Path(r) for r in roots if r],
        )

    def _root_cause(self, code: int) -> tuple[str, FailureClass]:
        """What made the run fail, and its class: the first rank's `error*.json`, else the
        log's last lines."""
        for path in self._error_files():
            try:
                payload = json.loads(path.read_text())
                kind, message = str(payload["type"]), str(payload["message"])
                return f"{kind}: {message}", classify(kind, message, code)
            except (OSError, ValueError, KeyError, TypeError):
                log.warning("job %s: unreadable %s", self.job_id, path.name)
        if code < 0:
            how = f"the training process was killed by {_signal_name(-code)}"
        else:
            how = f"the training process exited with code {code} without writing error.json"
        tail = self._log_tail()
        failure = classify(None, tail, code)
        return (f"{how}; last lines of {LOG_FILE}:\n{tail}" if tail else how), failure

    def _log_tail(self) -> str:
        """The last lines this attempt wrote to the log."""
        try:
            with (self.dir / LOG_FILE).open("rb") as f:
                size = f.seek(0, os.SEEK_END)
                f.seek(max(self.log_offset, size - LOG_TAIL_BYTES))
                text = f.read().decode(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.rstrip().splitlines()[-LOG_TAIL_LINES:])


def _metrics_record(line: str) -> MetricsRecord:
    """A `metrics.jsonl` line as a record the database can hold, else `RunEventError`."""
    record = parse_metrics_line(line)
    if record.epoch > MAX_INT:
        raise RunEventError(f"epoch {record.epoch} is out of range (at most {MAX_INT})")
    if record.granularity == "step" and not 0 <= record.step <= MAX_INT:
        raise RunEventError(f"step {record.step} is out of range (0 to {MAX_INT})")
    return record


_ARTIFACT_COLUMNS = Artifact.__table__.c


def _artifact_event(line: str) -> ArtifactEvent:
    """An `artifacts.jsonl` line as an event the database can hold, else `RunEventError`."""
    event = parse_artifact_line(line)
    for value, column in (
        (event.kind, _ARTIFACT_COLUMNS.kind),
        (event.path, _ARTIFACT_COLUMNS.name),
        (event.tag or "", _ARTIFACT_COLUMNS.tag),
        (event.sha256, _ARTIFACT_COLUMNS.sha256),
    ):
        if len(value) > column.type.length:
            raise RunEventError(f"{column.name} is longer than {column.type.length} characters")
    if event.epoch is not None and not 0 <= event.epoch <= MAX_INT:
        raise RunEventError(f"epoch {event.epoch} is out of range (0 to {MAX_INT})")
    if not 0 <= event.size <= MAX_BIGINT:
        raise RunEventError(f"size {event.size} is out of range")
    return event


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
