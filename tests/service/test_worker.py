"""The worker's supervision of a training process group, against real PostgreSQL.

A fake training command (a small script that behaves like `core.run` under torchrun: it writes
`metrics.jsonl` lines over time, starts a child in its own session like torchrun's ranks, and
writes `error.json` when it fails) drives `worker.runner.run_job` directly, so these tests take
seconds. `tests/test_e2e.py` runs the real core through a real Celery worker.
"""

from __future__ import annotations

import io
import json
import logging
import os
import sys
import textwrap
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import psutil
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from core.report import ArtifactEvent, MetricsRecord
from store import queries
from store.db import session_scope
from store.keys import get_or_create_owner
from store.models import Artifact, Job, Metric, MetricStep, utcnow
from store.settings import Settings
from tests.support.e2e import wait_for
from worker import runner as worker_runner
from worker.recovery import requeue_orphans
from worker.runner import LOST, REQUEUED, RunnerOptions, WorkerContext, run_job
from worker.tail import JsonlTail

FAKE_TRAINING = textwrap.dedent(
    """
    import json, os, subprocess, sys, time
    out, mode, epochs, delay = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    # Like torchrun's ranks: a child in its own session, which a group kill alone would miss.
    rank = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                            start_new_session=True)
    with open(os.path.join(out, "pids.txt"), "a") as f:
        f.write(f"{os.getpid()} {rank.pid}\\n")
    def append(name, obj):
        with open(os.path.join(out, name), "a") as f:
            f.write(json.dumps(obj) + "\\n")
    try:
        for epoch in range(1, epochs + 1):
            time.sleep(delay)
            append("metrics.jsonl", {"epoch": epoch, "step": 10 * epoch, "train_loss": 1 / epoch})
            append("artifacts.jsonl", {"event": "created", "kind": "checkpoint",
                   "path": f"checkpoints/epoch-{epoch:04d}.pt", "size": epoch, "sha256": "ab",
                   "epoch": epoch, "tag": "last"})
            if epoch > 1:
                append("artifacts.jsonl", {"event": "deleted", "kind": "checkpoint",
                       "path": f"checkpoints/epoch-{epoch - 1:04d}.pt"})
        if mode == "fail":
            with open(os.path.join(out, "error.json"), "w") as f:
                json.dump({"type": "DatasetNotFound", "message": "dataset 'Nope' not found; "
                           "looked in: /data", "traceback": "..."}, f)
            sys.exit(1)
        if mode == "rankfail":  # rank 1 fails first; rank 0 then fails in a collective
            for name, msg in (("error-rank1.json", "CUDA out of memory"),
                              ("error.json", "connection reset by peer")):
                with open(os.path.join(out, name), "w") as f:
                    json.dump({"type": "RuntimeError", "message": msg}, f)
                time.sleep(0.05)
            sys.exit(1)
        if mode == "crash":
            print("Segmentation fault (core dumped)", flush=True)
            sys.exit(139)
        if mode == "hang":
            time.sleep(600)
    finally:
        rank.terminate()
    """
)

SPEC = {
    "family": "graphsage_skipgram",
    "name": "fake",
    "data": {"format": "planetoid", "name": "Cora"},
    "training": {"epochs": 4},
}


@pytest.fixture
def settings(tmp_path: Path, pg_url: str) -> Settings:
    return Settings(DATABASE_URL=pg_url, TRAINCTL_HOME=str(tmp_path / "home"))


def make_context(
    settings: Settings,
    sessions: sessionmaker[Session],
    script: Path,
    mode: str = "ok",
    delay: float = 0.05,
    grace: float = 2.0,
) -> WorkerContext:
    def command(spec: Path, out: Path, devices: int, resume: bool) -> list[str]:
        return [sys.executable, str(script), str(out), mode, "4", str(delay)]

    return WorkerContext(
        settings=settings,
        sessions=sessions,
        options=RunnerOptions(poll_seconds=0.05, heartbeat_seconds=0.2, cancel_grace_seconds=grace),
        command=command,
    )


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "fake_training.py"
    path.write_text(FAKE_TRAINING)
    return path


def new_job(sessions: sessionmaker[Session]) -> str:
    with session_scope(sessions) as session:
        owner_id = get_or_create_owner(session, "alice").id
        return queries.create_job(session, owner_id, SPEC, family=SPEC["family"], name="fake").id


def job_row(sessions: sessionmaker[Session], job_id: str) -> Job:
    with sessions() as session:
        job = queries.get_job(session, job_id)
        assert job is not None
        return job


def metric_epochs(sessions: sessionmaker[Session], job_id: str) -> list[tuple[int, int]]:
    with sessions() as session:
        rows = session.execute(
            select(Metric.attempt, Metric.epoch)
            .where(Metric.job_id == job_id)
            .order_by(Metric.attempt, Metric.epoch)
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]


def run_pids(run_dir: Path) -> list[int]:
    return [int(p) for p in (run_dir / "pids.txt").read_text().split()]


def assert_all_gone(pids: list[int]) -> None:
    alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]
    assert not alive, f"training processes survived: {alive}"


# --- tail ---------------------------------------------------------------------------------------


@dataclass
class HangingRun:
    """A run of the fake training command that never ends, supervised in a thread."""

    ctx: WorkerContext
    thread: threading.Thread
    result: list[str | None]
    pids: list[int]


def start_hanging_run(
    settings: Settings, sessions: sessionmaker[Session], script: Path, job_id: str
) -> HangingRun:
    """Start `run_job` in a thread and wait until 4 epochs are in the database."""
    ctx = make_context(settings, sessions, script, mode="hang", delay=0.01, grace=1.0)
    thread, result = run_in_thread(job_id, ctx)
    wait_for(lambda: len(metric_epochs(sessions, job_id)) >= 4, 10, "4 epochs", every=0.05)
    return HangingRun(ctx, thread, result, run_pids(settings.artifact_root / job_id))


def run_in_thread(job_id: str, ctx: WorkerContext) -> tuple[threading.Thread, list[str | None]]:
    """`run_job` started in a thread; its result lands in the returned list."""
    result: list[str | None] = []
    thread = threading.Thread(target=lambda: result.append(run_job(job_id, ctx)))
    thread.start()
    return thread, result


def test_tail_reads_whole_lines_once_and_rereads_a_rewritten_file(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    tail = JsonlTail(path)
    assert tail.read() == []  # not there yet
    path.write_text('{"epoch": 1}\n{"epoch": 2, "lo')
    assert tail.read() == [{"epoch": 1}]
    assert tail.read() == []  # the partial line waits for its newline
    with path.open("a") as f:
        f.write('ss": 0.5}\nnot json\n[1]\n')
    assert tail.read() == [{"epoch": 2, "loss": 0.5}]
    path.write_text('{"epoch": 1}\n')  # rewritten shorter (a resumed run)
    assert tail.read() == [{"epoch": 1}]
    assert JsonlTail.from_end(path).read() == []


# --- runs ---------------------------------------------------------------------------------------


def test_success_records_metrics_artifacts_and_progress(
    settings: Settings, sessions: sessionmaker[Session], script: Path
) -> None:
    job_id = new_job(sessions)
    ctx = make_context(settings, sessions, script)
    assert run_job(job_id, ctx) == "succeeded"

    job = job_row(sessions, job_id)
    assert (job.status, job.attempt, job.progress, job.error) == ("succeeded", 1, 1.0, None)
    assert metric_epochs(sessions, job_id) == [(1, 1), (1, 2), (1, 3), (1, 4)]
    run_dir = settings.artifact_root / job.run_dir
    assert (run_dir / "spec.yaml").is_file()
    assert "=== trainctl: attempt 1" in (run_dir / "logs.txt").read_text()
    with sessions() as session:
        artifacts = session.scalars(select(Artifact).where(Artifact.job_id == job_id)).all()
    # Epochs 1-3 were created, then deleted as the next one came: only the last is left.
    assert [(a.name, a.path, a.tag) for a in artifacts] == [
        ("checkpoints/epoch-0004.pt", f"{job_id}/checkpoints/epoch-0004.pt", "last")
    ]
    assert_all_gone(run_pids(run_dir))


def test_metrics_arrive_while_the_run_is_going(
    settings: Settings, sessions: sessionmaker[Session], script: Path
) -> None:
    job_id = new_job(sessions)
    thread, _ = run_in_thread(job_id, make_context(settings, sessions, script, delay=0.5))
    try:
        wait_for(lambda: metric_epochs(sessions, job_id), 10, "the first epoch", every=0.05)
        seen = metric_epochs(sessions, job_id)
        job = job_row(sessions, job_id)
        assert seen and job.status == "running", (seen, job.status)
        assert 0 < job.progress < 1
    finally:
        thread.join(30)
    assert job_row(sessions, job_id).status == "succeeded"


def test_failure_reports_the_root_cause_from_error_json(
    settings: Settings, sessions: sessionmaker[Session], script: Path
) -> None:
    job_id = new_job(sessions)
    assert run_job(job_id, make_context(settings, sessions, script, mode="fail")) == "failed"
    job = job_row(sessions, job_id)
    assert job.status == "failed"
    assert job.error == "DatasetNotFound: dataset 'Nope' not found; looked in: /data"


def test_failure_without_error_json_reports_the_log_tail(
    settings: Settings, sessions: sessionmaker[Session], script: Path
) -> None:
    job_id = new_job(sessions)
    assert run_job(job_id, make_context(settings, sessions, script, mode="crash")) == "failed"
    error = job_row(sessions, job_id).error
    assert error is not None
    assert "exited with code 139" in error and "Segmentation fault" in error, error


def test_cancel_stops_every_process_of_the_run(
    settings: Settings, sessions: sessionmaker[Session], script: Path
) -> None:
    job_id = new_job(sessions)
    run = start_hanging_run(settings, sessions, script, job_id)
    thread, pids = run.thread, run.pids
    assert all(psutil.pid_exists(p) for p in pids)
    with session_scope(sessions) as session:
        assert queries.request_cancel(session, job_id)
    started = time.monotonic()
    thread.join(15)
    assert not thread.is_alive()
    assert time.monotonic() - started < 8  # grace is 2 s; the margin is for a loaded machine
    assert job_row(sessions, job_id).status == "cancelled"
    assert_all_gone(pids)


def test_a_duplicate_delivery_does_nothing(
    settings: Settings, sessions: sessionmaker[Session], script: Path
) -> None:
    job_id = new_job(sessions)
    ctx = make_context(settings, sessions, script, delay=0.2)
    first, _ = run_in_thread(job_id, ctx)
    # The first delivery claims the job (however loaded the machine), then the second comes.
    wait_for(lambda: job_row(sessions, job_id).status == "running", 10, "the claim", every=0.01)
    assert run_job(job_id, ctx) is None  # while the first one runs
    first.join(30)
    assert run_job(job_id, ctx) is None  # and after it finished
    job = job_row(sessions, job_id)
    assert (job.status, job.attempt) == ("succeeded", 1)
    assert metric_epochs(sessions, job_id) == [(1, 1), (1, 2), (1, 3), (1, 4)]


def test_worker_shutdown_requeues_and_the_next_attempt_resumes(
    settings: Settings, sessions: sessionmaker[Session], script: Path
) -> None:
    job_id = new_job(sessions)
    run = start_hanging_run(settings, sessions, script, job_id)
    ctx, thread, result, pids = run.ctx, run.thread, run.result, run.pids
    ctx.shutdown.set()
    thread.join(15)
    assert result == [REQUEUED]
    assert job_row(sessions, job_id).status == "queued"
    assert_all_gone(pids)

    resumed: list[bool] = []

    def command(spec: Path, out: Path, devices: int, resume: bool) -> list[str]:
        resumed.append(resume)
        return [sys.executable, str(script), str(out), "ok", "4", "0.01"]

    ctx2 = WorkerContext(settings=settings, sessions=sessions, options=ctx.options, command=command)
    assert run_job(job_id, ctx2) == "succeeded"
    assert resumed == [True]
    assert job_row(sessions, job_id).attempt == 2
    # Attempt 2 reports only the lines it wrote itself.
    assert [a for a, _ in metric_epochs(sessions, job_id)] == [1] * 4 + [2] * 4


def test_orphan_sweep_requeues_a_silent_job_and_its_old_worker_stops(
    settings: Settings,
    sessions: sessionmaker[Session],
    script: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The worker's heartbeats pass through a lock the test holds while the worker is to look
    # silent: a beat landing between the backdating and the sweep would (rightly) keep the job.
    beats = threading.Lock()
    beat = worker_runner._Run._heartbeat

    def gated(self: worker_runner._Run) -> bool:
        with beats:
            return beat(self)

    monkeypatch.setattr(worker_runner._Run, "_heartbeat", gated)
    job_id = new_job(sessions)
    run = start_hanging_run(settings, sessions, script, job_id)
    thread, result, pids = run.thread, run.result, run.pids
    dispatched: list[str] = []
    assert requeue_orphans(sessions, dispatched.append, stale_after=60) == []  # still beating
    with beats:
        with session_scope(sessions) as session:  # as if its worker went silent 2 minutes ago
            session.execute(
                update(Job)
                .where(Job.id == job_id)
                .values(updated_at=utcnow() - timedelta(minutes=2))
            )
        assert requeue_orphans(sessions, dispatched.append, stale_after=60) == [job_id]
    assert dispatched == [job_id]
    assert job_row(sessions, job_id).status == "queued"
    thread.join(15)  # the old worker sees the job is no longer its own and stops the run
    assert result == [LOST]
    assert_all_gone(pids)


def test_orphan_sweep_finishes_a_silent_job_with_a_cancel_request(
    sessions: sessionmaker[Session],
) -> None:
    job_id = new_job(sessions)
    with session_scope(sessions) as session:
        queries.claim_job(session, job_id, "gone:1")
        queries.request_cancel(session, job_id)
        session.execute(
            update(Job).where(Job.id == job_id).values(updated_at=utcnow() - timedelta(minutes=2))
        )
    assert requeue_orphans(sessions, lambda _: None, stale_after=60) == []
    assert job_row(sessions, job_id).status == "cancelled"


def test_spec_file_and_environment_of_the_training_process(
    settings: Settings, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import json, os, sys\n"
        "json.dump({k: os.environ.get(k) for k in ('TRAINCTL_DATA_ROOT', 'PYTHONPATH')},"
        " open(os.path.join(sys.argv[1], 'env.json'), 'w'))\n"
    )
    job_id = new_job(sessions)

    def command(spec: Path, out: Path, devices: int, resume: bool) -> list[str]:
        assert (spec.name, devices, resume) == ("spec.yaml", 1, False)
        return [sys.executable, str(probe), str(out)]

    ctx = WorkerContext(settings=settings, sessions=sessions, command=command)
    assert run_job(job_id, ctx) == "succeeded"
    env = json.loads((settings.artifact_root / job_id / "env.json").read_text())
    roots = env["TRAINCTL_DATA_ROOT"].split(os.pathsep)
    assert roots[0] == str(settings.upload_root / "alice")  # the owner's uploads come first
    assert str(Path(__file__).resolve().parents[2]) in env["PYTHONPATH"].split(os.pathsep)


def test_the_first_rank_to_fail_is_the_root_cause_and_old_errors_are_kept(
    settings: Settings, sessions: sessionmaker[Session], script: Path
) -> None:
    job_id = new_job(sessions)
    ctx = make_context(settings, sessions, script, mode="rankfail", delay=0.01)
    for attempt in (1, 2, 3):
        assert run_job(job_id, ctx) == "failed"
        job = job_row(sessions, job_id)
        assert (job.attempt, job.error) == (attempt, "RuntimeError: CUDA out of memory")
        with session_scope(sessions) as session:  # as if retried
            session.execute(update(Job).where(Job.id == job_id).values(status="queued"))
    names = sorted(p.name for p in (settings.artifact_root / job_id).glob("error*.json"))
    assert names == [
        "error-rank1.attempt-1.json",
        "error-rank1.attempt-2.json",
        "error-rank1.json",
        "error.attempt-1.json",
        "error.attempt-2.json",
        "error.json",
    ]


def test_a_failing_worker_stops_the_run_and_fails_the_job(
    settings: Settings,
    sessions: sessionmaker[Session],
    script: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    job_id = new_job(sessions)
    ctx = make_context(settings, sessions, script, mode="hang", delay=0.01, grace=1.0)
    calls = 0
    real = queries.cancel_requested

    def flaky(session: Session, job_id: str) -> bool:
        nonlocal calls
        calls += 1
        if calls > 20:
            raise ConnectionError("database went away")
        return real(session, job_id)

    monkeypatch.setattr(queries, "cancel_requested", flaky)
    assert run_job(job_id, ctx) == "failed"
    job = job_row(sessions, job_id)
    assert job.error == "worker error: ConnectionError: database went away"
    assert_all_gone(run_pids(settings.artifact_root / job_id))


# --- the run contract: typed events ---------------------------------------------------------

REPLAY = textwrap.dedent(
    """
    import shutil, sys
    from pathlib import Path
    # A run that reports what `src` holds: its .jsonl lines appended, its other files copied.
    src, out = Path(sys.argv[1]), Path(sys.argv[2])
    for path in sorted(src.rglob("*")):
        target = out / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        elif path.suffix == ".jsonl":
            with target.open("a") as f:
                f.write(path.read_text())
        else:
            shutil.copyfile(path, target)
    """
)
BAD_METRIC_LINES = [
    "not json",
    "[1, 2]",
    '{"v": 2, "epoch": 1, "loss": 1.0}',  # a version this reader does not know
    '{"step": 3, "loss": 1.0}',  # no epoch
    '{"granularity": "batch", "epoch": 1, "step": 1}',
    '{"granularity": "step", "epoch": 1, "step": -5, "loss": 1.0}',
    '{"granularity": "step", "epoch": 1, "step": 99999999999, "loss": 1.0}',
]
BAD_ARTIFACT_LINES = [
    '{"event": "moved", "path": "x.pt"}',
    '{"event": "created", "kind": "file"}',  # no path
    '{"event": "created", "path": "x.pt", "size": "big"}',
    '{"event": "created", "path": "x.pt", "tag": "a-tag-longer-than-the-column"}',
    '{"event": "created", "path": "x.pt", "meta": [1]}',
]


def replay_run(
    settings: Settings, sessions: sessionmaker[Session], tmp_path: Path, job_id: str
) -> str | None:
    """`run_job` with a training command that reports what `tmp_path/src` holds."""
    script = tmp_path / "replay.py"
    script.write_text(REPLAY)

    def command(spec: Path, out: Path, devices: int, resume: bool) -> list[str]:
        return [sys.executable, str(script), str(tmp_path / "src"), str(out)]

    options = RunnerOptions(poll_seconds=0.05, heartbeat_seconds=0.2)
    return run_job(job_id, WorkerContext(settings, sessions, options, command=command))


def write_run(src: Path, metrics: list[str], artifacts: list[str]) -> None:
    src.mkdir(parents=True, exist_ok=True)
    (src / "metrics.jsonl").write_text("".join(f"{line}\n" for line in metrics))
    (src / "artifacts.jsonl").write_text("".join(f"{line}\n" for line in artifacts))


def test_typed_events_become_epoch_step_and_artifact_rows_and_bad_lines_are_skipped(
    settings: Settings,
    sessions: sessionmaker[Session],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    nan = float("nan")
    metrics = [
        MetricsRecord(0, 2, {"train_loss": 2.0, "lr": 0.1}, "step").to_json(),
        MetricsRecord(1, 4, {"train_loss": 1.0, "grad_norm": nan}, "step").to_json(),
        MetricsRecord(1, 4, {"train_loss": 1.0, "val_loss": nan}).to_json(),
        *BAD_METRIC_LINES,
        '{"epoch": 2, "step": 8, "train_loss": 0.5}',  # an older run's line: no v, no granularity
        MetricsRecord(2, 6, {"train_loss": 0.7}, "step").to_json(),
    ]
    emb_meta = {"shape": [3, 2], "dtype": "float32", "ids": "node_ids.csv"}
    best = ArtifactEvent("created", "checkpoint", "checkpoints/best.pt", 5, epoch=2, tag="best")
    artifacts = [
        ArtifactEvent("created", "embeddings", "embeddings.npy", 80, "ab", meta=emb_meta).to_json(),
        *BAD_ARTIFACT_LINES,
        best.to_json(),
        ArtifactEvent("created", "weird", "other.bin").to_json(),  # unknown kind: kept, warned
    ]
    write_run(tmp_path / "src", metrics, artifacts)
    job_id = new_job(sessions)

    with caplog.at_level(logging.WARNING, logger="worker.runner"):
        assert replay_run(settings, sessions, tmp_path, job_id) == "succeeded"

    with sessions() as session:
        epochs = session.execute(
            select(Metric.epoch, Metric.values)
            .where(Metric.job_id == job_id)
            .order_by(Metric.epoch)
        ).all()
        steps = session.execute(
            select(MetricStep.attempt, MetricStep.step, MetricStep.epoch, MetricStep.values)
            .where(MetricStep.job_id == job_id)
            .order_by(MetricStep.step)
        ).all()
        rows = session.scalars(select(Artifact).where(Artifact.job_id == job_id)).all()
    assert [tuple(r) for r in epochs] == [
        (1, {"step": 4, "train_loss": 1.0, "val_loss": None}),
        (2, {"step": 8, "train_loss": 0.5}),
    ]
    assert [tuple(r) for r in steps] == [
        (1, 2, 0, {"train_loss": 2.0, "lr": 0.1}),
        (1, 4, 1, {"train_loss": 1.0, "grad_norm": None}),
        (1, 6, 2, {"train_loss": 0.7}),
    ]
    assert {a.name: (a.kind, a.meta, a.tag) for a in rows} == {
        "embeddings.npy": ("embeddings", emb_meta, None),
        "checkpoints/best.pt": ("checkpoint", {}, "best"),
        "other.bin": ("weird", {}, None),
    }
    skipped = [r.getMessage() for r in caplog.records if "skipping a bad" in r.getMessage()]
    assert len(skipped) == len(BAD_METRIC_LINES) + len(BAD_ARTIFACT_LINES), skipped
    assert any("'weird'" in r.getMessage() for r in caplog.records)


def test_an_embeddings_csv_is_keyed_through_the_events_meta(
    service_settings: Settings,
    sessions: sessionmaker[Session],
    tmp_path: Path,
    client: TestClient,
    auth: dict[str, str],
) -> None:
    """A run reports embeddings and the ids keying them by names the service does not know;
    the API's CSV takes its ids from the artifact the embeddings' `meta.ids` names. The worker
    converts them to Parquet before the job succeeds: that download is a file read."""
    src = tmp_path / "src"
    (src / "out").mkdir(parents=True)
    emb = np.arange(6, dtype=np.float32).reshape(3, 2)  # [sites, dim]
    np.save(src / "out" / "vectors.npy", emb)
    (src / "out" / "keys.csv").write_text("row,site_id\n0,s-17\n1,s-4\n2,s-9\n")
    metrics = [MetricsRecord(1, 1, {"train_loss": float("inf")}).to_json()]
    emb_meta = {"shape": [3, 2], "dtype": "float32", "ids": "out/keys.csv"}
    ids_meta = {"id_column": "site_id", "of": "out/vectors.npy"}
    events = [
        ArtifactEvent("created", "embeddings", "out/vectors.npy", meta=emb_meta),
        ArtifactEvent("created", "ids", "out/keys.csv", meta=ids_meta),
    ]
    write_run(src, metrics, [event.to_json() for event in events])
    job_id = new_job(sessions)  # alice's, whose key `auth` holds
    assert replay_run(service_settings, sessions, tmp_path, job_id) == "succeeded"
    kept = list((service_settings.artifact_root / job_id / "out" / "exports").iterdir())
    assert [p.suffix for p in kept] == [".parquet"]  # TRAINCTL_EXPORT_FORMATS' default

    response = client.get(f"/jobs/{job_id}/embeddings?format=parquet", headers=auth)
    assert response.content == kept[0].read_bytes() and "content-length" in response.headers
    table = pq.read_table(io.BytesIO(response.content))
    assert table.column("site_id").to_pylist() == ["s-17", "s-4", "s-9"]
    np.testing.assert_array_equal(np.array(table.column("embedding").to_pylist()), emb)
    text = client.get(f"/jobs/{job_id}/embeddings?format=csv", headers=auth).text
    assert text.splitlines() == ["site_id,dim_0,dim_1", "s-17,0,1", "s-4,2,3", "s-9,4,5"]
    body = json.loads(client.get(f"/jobs/{job_id}/metrics", headers=auth).text)
    assert body["data"] == [{"epoch": 1, "values": {"step": 1, "train_loss": None}}]


def test_runner_options_come_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    variables = {
        "TRAINCTL_POLL_SECONDS": "0.5",
        "TRAINCTL_HEARTBEAT_SECONDS": "1",
        "TRAINCTL_CANCEL_GRACE_SECONDS": "3",
        "TRAINCTL_STALE_AFTER_SECONDS": "10",
    }
    for name in variables:
        monkeypatch.delenv(name, raising=False)
    assert RunnerOptions.from_settings(Settings()) == RunnerOptions()
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    assert RunnerOptions.from_settings(Settings()) == RunnerOptions(0.5, 1.0, 3.0, 10.0)
    monkeypatch.setenv("TRAINCTL_POLL_SECONDS", "0")
    with pytest.raises(ValidationError, match="TRAINCTL_POLL_SECONDS"):
        Settings()


def test_the_worker_consumes_the_task_the_api_sends(tmp_path: Path) -> None:
    """One task name and one set of broker settings (`store.broker`) for both sides."""
    from store.broker import TASK_NAME
    from worker.app import make_celery
    from worker.tasks import run_job_task

    settings = Settings(TRAINCTL_HOME=str(tmp_path), TRAINCTL_QUEUE="q1")
    app = make_celery(settings)
    assert run_job_task.name == TASK_NAME
    assert app.conf.task_routes == {TASK_NAME: {"queue": "q1"}}
    assert "worker.tasks" in app.conf.include


PHASED_TRAINING = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from core.report import PhaseEvent, PhaseLog
    out = Path(sys.argv[1])
    log = PhaseLog(out)
    for phase, total in (("loading data", None), ("training", 4)):
        log(PhaseEvent(phase, total, "epoch" if total else None))
        while not (out / f"go-{phase}").exists():  # the test has seen this phase
            time.sleep(0.02)
    with open(out / "events.jsonl", "a") as f:
        f.write('{"event": "phase"}\\n')  # no phase name: skipped, the job goes on
    """
)


def test_phase_events_become_the_jobs_phase(
    settings: Settings, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    script = tmp_path / "phased.py"
    script.write_text(PHASED_TRAINING)
    ctx = make_context(settings, sessions, script)
    ctx.command = lambda spec, out, devices, resume: [sys.executable, str(script), str(out)]
    job_id = new_job(sessions)
    run_dir = settings.artifact_root / job_id
    thread, result = run_in_thread(job_id, ctx)
    for phase in ("loading data", "training"):
        wait_for(lambda p=phase: job_row(sessions, job_id).phase == p, 20, phase, every=0.02)
        (run_dir / f"go-{phase}").touch()
    thread.join(30)
    assert result == ["succeeded"]
    assert job_row(sessions, job_id).phase is None  # finished: no phase
