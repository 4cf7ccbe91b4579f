"""Benchmark: how long a submitted job waits before it runs, beside Celery's own round trip.

    python bench/bench_submit.py [--jobs 20]

Starts `trainctl api` and `trainctl worker` (concurrency 1) on a throwaway PostgreSQL database
(`TRAINCTL_TEST_PG`, default postgresql://postgres@127.0.0.1:5432) and Redis (`BENCH_REDIS`,
default redis://127.0.0.1:6379/12, queues of their own), then submits N short jobs one after
another: the time from `POST /jobs` returning to the job's status `running`, seen by polling the
database every 20 ms. Each job is cancelled once seen running, and the next is submitted once
the worker is free again. As the reference, a bare Celery worker with the same settings runs a
task that only records when it started: `send_task` -> task start. Prints p50/p95 of both and
their ratio; the target is a p50 of at most 1 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from core.launch import free_port  # noqa: E402
from store.settings import Settings  # noqa: E402
from worker.app import make_celery  # noqa: E402

PG_SERVER = os.environ.get("TRAINCTL_TEST_PG", "postgresql://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/12")
POLL_S = 0.02
PING_TASK = "bench.ping"
SPEC = {
    "family": "graphsage_skipgram",
    "name": "bench-submit",
    "data": {"format": "planetoid", "name": "Cora"},
    "training": {"epochs": 1000},
    "walks": {"walks_per_node": 1, "walk_length": 5, "window": 2},
    "model": {"layers": 1, "hidden_dim": 16, "out_dim": 16},
    "probe": {"enabled": False},
}
# The flags `trainctl worker` gives Celery, so the reference worker behaves the same.
WORKER_FLAGS = ["--pool", "threads", "--concurrency", "1", "--without-gossip", "--without-mingle"]


def percentiles(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return statistics.median(ordered), p95


def wait_until(condition: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(POLL_S)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


# --- the reference: a bare Celery task ----------------------------------------------------------


def ping_app(queue: str) -> Any:
    app = make_celery(Settings(REDIS_URL=REDIS_URL, TRAINCTL_QUEUE=queue))
    app.conf.include = []  # only the ping task: no trainctl task, no orphan sweep

    @app.task(name=PING_TASK)
    def ping(key: str) -> None:
        redis.Redis.from_url(REDIS_URL).rpush(key, repr(time.time()))

    return app


def run_ping_worker(queue: str) -> None:
    ping_app(queue).worker_main(
        ["worker", "--queues", queue, "--loglevel", "WARNING", *WORKER_FLAGS]
    )


def celery_round_trips(n: int, log_dir: Path) -> list[float]:
    queue = f"bench-ping-{uuid.uuid4().hex[:8]}"
    cmd = [sys.executable, __file__, "--ping-worker", queue]
    with (log_dir / "ping-worker.log").open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    client = redis.Redis.from_url(REDIS_URL)
    app = ping_app(queue)
    try:
        latencies = []
        for i in range(n + 1):  # the first one warms up
            key = f"bench:ping:{queue}:{i}"
            sent = time.time()
            app.send_task(PING_TASK, args=[key], queue=queue)
            reply = client.blpop([key], timeout=60)
            if reply is None:
                raise TimeoutError(f"the ping worker did not run a task (see {log_dir})")
            if i:
                latencies.append(float(reply[1]) - sent)
        return latencies
    finally:
        proc.terminate()
        proc.wait(30)
        client.delete(queue, f"_kombu.binding.{queue}")


# --- trainctl: POST /jobs -> running ------------------------------------------------------------


def submit_latencies(n: int, log_dir: Path) -> tuple[list[float], list[float]]:
    """Per job: POST returned -> `running` seen by polling, and POST sent -> claimed
    (`jobs.started_at`, exact: no polling in it)."""
    db_name = f"trainctl_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db_name}"')
    db_url = f"{PG_SERVER}/{db_name}"
    queue = f"bench-submit-{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINCTL_")}
    env.update(
        DATABASE_URL=db_url,
        REDIS_URL=REDIS_URL,
        TRAINCTL_QUEUE=queue,
        TRAINCTL_HOME=str(log_dir / "home"),
        TRAINCTL_API_PORT=str(port),
        TRAINCTL_CANCEL_GRACE_SECONDS="5",
        PYTHONPATH=str(REPO),
    )
    cli = [sys.executable, "-m", "cli.main"]
    procs = []
    try:
        subprocess.run([*cli, "migrate"], env=env, cwd=REPO, check=True, capture_output=True)
        keys = subprocess.run(
            [*cli, "keys", "create", "bench"], env=env, cwd=REPO, check=True, capture_output=True
        )
        key = keys.stdout.decode().strip().splitlines()[-1]
        for name in ("api", "worker"):
            with (log_dir / f"{name}.log").open("wb") as log:
                procs.append(
                    subprocess.Popen([*cli, name], env=env, cwd=REPO, stdout=log, stderr=log)
                )
        url = f"http://127.0.0.1:{port}"
        http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        wait_until(lambda: _healthy(http), 60, "the API")
        with psycopg.connect(db_url, autocommit=True) as db:

            def wait_status(job_id: str, wanted: str, timeout: float) -> None:
                def reached() -> bool:
                    row = db.execute("SELECT status FROM jobs WHERE id = %s", (job_id,)).fetchone()
                    return row is not None and row[0] == wanted

                wait_until(reached, timeout, f"job {job_id} to be {wanted}")

            observed, claimed = [], []
            for i in range(n + 1):  # the first one warms up
                sent = time.time()
                response = http.post("/jobs", json=SPEC)
                posted = time.perf_counter()
                response.raise_for_status()
                job_id = response.json()["id"]
                wait_status(job_id, "running", 120)
                if i:
                    observed.append(time.perf_counter() - posted)
                    row = db.execute("SELECT started_at FROM jobs WHERE id = %s", (job_id,))
                    claimed.append(row.fetchone()[0].timestamp() - sent)
                http.post(f"/jobs/{job_id}/cancel").raise_for_status()
                wait_status(job_id, "cancelled", 60)
        http.close()
        return observed, claimed
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(60)
        redis.Redis.from_url(REDIS_URL).delete(queue, f"_kombu.binding.{queue}")
        with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')


def _healthy(http: httpx.Client) -> bool:
    try:
        return http.get("/healthz").status_code == 200
    except httpx.HTTPError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--ping-worker", metavar="QUEUE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ping_worker:
        run_ping_worker(args.ping_worker)
        return
    with tempfile.TemporaryDirectory(prefix="bench-submit-") as tmp:
        log_dir = Path(tmp)
        celery = celery_round_trips(args.jobs, log_dir)
        submit, claim = submit_latencies(args.jobs, log_dir)
    c50, c95 = percentiles(celery)
    s50, s95 = percentiles(submit)
    k50, k95 = percentiles(claim)
    print(f"{args.jobs} jobs, sequential; Redis {REDIS_URL}; PostgreSQL; worker concurrency 1")
    print(f"{'':34}{'p50 ms':>10}{'p95 ms':>10}")
    print(f"{'Celery send_task -> task start':34}{c50 * 1e3:>10.1f}{c95 * 1e3:>10.1f}")
    print(f"{'trainctl POST sent -> claimed':34}{k50 * 1e3:>10.1f}{k95 * 1e3:>10.1f}")
    print(f"{'trainctl POST returned -> running':34}{s50 * 1e3:>10.1f}{s95 * 1e3:>10.1f}")
    print(
        f"  (running is seen by polling every {POLL_S * 1e3:.0f} ms: up to that much is the poll)"
    )
    print(f"ratio to Celery (p50): claimed {k50 / c50:.1f}x, running seen {s50 / c50:.1f}x")
    print(f"target: POST -> running p50 <= 1000 ms: {'met' if s50 <= 1 else 'MISSED'}")


if __name__ == "__main__":
    main()
