"""Benchmark of the API: metrics polling under concurrent pollers, and embedding downloads.

    python bench/bench_api.py [--seconds 10] [--pollers 100] [--workers 2] [--embeddings-mb 1024]

Seeds a job with 1,000 metric rows in a throwaway PostgreSQL database (`TRAINCTL_TEST_PG`,
default postgresql://postgres@127.0.0.1:5432), starts the API with uvicorn in a subprocess, and
polls it from a separate process with keep-alive connections (a minimal asyncio HTTP/1.1
client, so the load generator costs little CPU next to the server). Prints latency percentiles
and requests/s of the metrics endpoint beside `/healthz` (the floor of the stack), plain and
conditional (`If-None-Match` with the answer's `ETag`: the 304s of an up-to-date dashboard),
then streams
a large `.npy` through `GET /jobs/{id}/embeddings` and reports MB/s and the API's RSS growth.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import psutil
import psycopg
from sqlalchemy import insert

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from core.launch import free_port  # noqa: E402
from store import queries  # noqa: E402
from store.db import make_engine, session_factory, session_scope  # noqa: E402
from store.exports import job_embeddings, keep_exports  # noqa: E402
from store.keys import create_owner_key, get_or_create_owner  # noqa: E402
from store.migrate import upgrade_head  # noqa: E402
from store.models import Metric, utcnow  # noqa: E402

PG_SERVER = os.environ.get("TRAINCTL_TEST_PG", "postgresql://postgres@127.0.0.1:5432")
SPEC = {
    "family": "graphsage_skipgram",
    "name": "bench",
    "data": {"format": "planetoid", "name": "Cora"},
    "training": {"epochs": 1000},
}


# --- set-up -------------------------------------------------------------------------------------


def create_database() -> str:
    name = f"trainctl_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{PG_SERVER}/{name}"


def drop_database(url: str) -> None:
    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


def seed(url: str, epochs: int) -> tuple[str, str]:
    """An owner's key and a running job with `epochs` metric rows."""
    upgrade_head(url)
    engine = make_engine(url)
    sessions = session_factory(engine)
    with session_scope(sessions) as session:
        key = create_owner_key(session, "bench")
        owner_id = get_or_create_owner(session, "bench").id
        job_id = queries.create_job(session, owner_id, SPEC, family=SPEC["family"], name="bench").id
    with session_scope(sessions) as session:
        queries.claim_job(session, job_id, "bench")
        rng = np.random.default_rng(0)
        rows = [
            {
                "job_id": job_id,
                "attempt": 1,
                "epoch": epoch,
                "values": {
                    "train_loss": float(rng.random()),
                    "val_loss": float(rng.random()),
                    "lr": 1e-3,
                    "probe_val_acc": float(rng.random()),
                    "epoch_seconds": float(rng.random()),
                },
                "created_at": utcnow(),
            }
            for epoch in range(1, epochs + 1)
        ]
        session.execute(insert(Metric), rows)
    engine.dispose()
    return key, job_id


def start_api(url: str, home: Path, port: int, workers: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DATABASE_URL": url, "TRAINCTL_HOME": str(home)}
    cmd = [
        sys.executable, "-m", "uvicorn", "api.main:create_app", "--factory",
        "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
        "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=REPO, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                time.sleep(1.0)  # every worker up
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"uvicorn exited with {proc.returncode}")
        time.sleep(0.2)
    proc.terminate()
    raise RuntimeError("the API did not become ready in 60 s")


# --- load generator (runs in its own process) ---------------------------------------------------


async def _poller(
    port: int,
    request: bytes,
    start: float,
    stop: float,
    interval: float,
    latencies: list[float],
    errors: list[int],
) -> None:
    """One keep-alive connection: back to back (`interval` 0), or one request per `interval`
    seconds from a random phase (a dashboard)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    next_at = time.perf_counter() + random.uniform(0, interval)
    try:
        while (now := time.perf_counter()) < stop:
            if interval:
                await asyncio.sleep(max(0.0, next_at - now))
                next_at += interval
                now = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            if now >= start:  # after the warm-up
                latencies.append(time.perf_counter() - now)
                if head[9:12] not in (b"200", b"304"):
                    errors.append(int(head[9:12]))
    finally:
        writer.close()


def _load(
    port: int,
    path: str,
    key: str,
    pollers: int,
    seconds: float,
    interval: float,
    warmup: float,
    etag: str | None = None,
) -> dict:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    conditional = f"If-None-Match: {etag}\r\n" if etag else ""
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
        f"{conditional}\r\n"
    ).encode()
    latencies: list[float] = []
    errors: list[int] = []

    async def run() -> None:
        start = time.perf_counter() + warmup
        stop = start + seconds
        await asyncio.gather(
            *(
                _poller(port, request, start, stop, interval, latencies, errors)
                for _ in range(pollers)
            )
        )

    asyncio.run(run())
    return {"latencies": latencies, "errors": errors, "seconds": seconds}


def load(
    port: int,
    path: str,
    key: str,
    pollers: int,
    seconds: float,
    interval: float = 0.0,
    conditional: bool = False,
) -> dict[str, float]:
    """Poll `path` from a separate process; latency percentiles (ms) and requests/s. With
    `conditional`, every request sends the `ETag` of a first answer as `If-None-Match` (a
    dashboard that is up to date: 304s)."""
    etag = None
    if conditional:
        response = httpx.get(
            f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {key}"}
        )
        etag = response.headers["etag"]
    with mp.get_context("spawn").Pool(1) as pool:
        out = pool.apply(_load, (port, path, key, pollers, seconds, interval, 1.0, etag))
    lat = np.array(out["latencies"]) * 1000
    return {
        "p50": float(np.percentile(lat, 50)),
        "p95": float(np.percentile(lat, 95)),
        "p99": float(np.percentile(lat, 99)),
        "rps": len(lat) / out["seconds"],
        "errors": len(out["errors"]),
    }


# --- embeddings download ------------------------------------------------------------------------


def write_embeddings(path: Path, megabytes: int, dim: int = 128) -> int:
    """A float32 [rows, dim] `.npy` of about `megabytes` MB, written in chunks."""
    rows = megabytes * 1024 * 1024 // (dim * 4)
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, dim))
    chunk = np.random.default_rng(0).random((65536, dim), dtype=np.float32)
    for start in range(0, rows, len(chunk)):
        arr[start : start + len(chunk)] = chunk[: rows - start]
    arr.flush()
    del arr
    return path.stat().st_size


def _download(port: int, path: str, key: str) -> tuple[int, float]:
    """Read the whole response into a reused buffer; (bytes received, seconds)."""
    view = memoryview(bytearray(4 * 1024 * 1024))
    with socket.create_connection(("127.0.0.1", port)) as sock:
        t0 = time.perf_counter()
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        total = 0
        while n := sock.recv_into(view):
            total += n
        return total, time.perf_counter() - t0


def api_rss(proc: psutil.Process) -> dict[int, int]:
    """RSS of the uvicorn process and its workers, by pid."""
    out = {}
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            out[p.pid] = p.memory_info().rss
    return out


def download(port: int, path: str, key: str, server: psutil.Process) -> dict[str, float]:
    """Throughput of one download and the largest RSS growth of any API process during it."""
    baseline = api_rss(server)
    peak = dict(baseline)
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            for pid, rss in api_rss(server).items():
                peak[pid] = max(peak.get(pid, 0), rss)
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        with mp.get_context("spawn").Pool(1) as pool:
            size, seconds = pool.apply(_download, (port, path, key))
    finally:
        done.set()
        sampler.join()
    growth = max(peak[pid] - baseline.get(pid, peak[pid]) for pid in peak)
    return {"bytes": size, "seconds": seconds, "mb_s": size / seconds / 1e6, "rss_mb": growth / 1e6}


def keep_as_the_worker_does(url: str, root: Path, job_id: str) -> str:
    """Drops the API's conversion and writes Parquet as a worker does before it marks a job
    succeeded (`store.exports.keep_exports`); says how long that took."""
    for old in root.glob(f"{job_id}/exports/*"):
        old.unlink()
    engine = make_engine(url)
    with session_scope(session_factory(engine)) as session:
        sources = job_embeddings(session, root, job_id)
    engine.dispose()
    started = time.perf_counter()
    (kept,) = keep_exports(sources, ["parquet"])
    seconds = time.perf_counter() - started
    size = sources[0].npy_path.stat().st_size
    return (
        f"the worker's Parquet at job end: {seconds:.2f} s ({size / seconds / 1e6:.0f} MB/s of "
        f"npy; {kept.stat().st_size / 1e6:.0f} MB written), before the job is marked succeeded"
    )


# --- main ---------------------------------------------------------------------------------------


def print_table(title: str, rows: list[tuple[str, dict[str, float]]]) -> None:
    """Latency rows beside the first (the reference), as a p99 ratio."""
    print(f"\n{title}")
    print(f"{'endpoint':42s} {'p50 ms':>8s} {'p95 ms':>8s} {'p99 ms':>8s} {'req/s':>7s}"
          f" {'p99/ref':>8s} {'errors':>6s}")  # fmt: skip
    ref = rows[0][1]["p99"]
    for label, r in rows:
        print(
            f"{label:42s} {r['p50']:8.1f} {r['p95']:8.1f} {r['p99']:8.1f} {r['rps']:7.0f}"
            f" {r['p99'] / ref:7.2f}x {r['errors']:6d}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per case")
    parser.add_argument("--pollers", type=int, default=100)
    parser.add_argument("--interval", type=float, default=0.5,
                        help="seconds between one paced poller's requests")  # fmt: skip
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument("--epochs", type=int, default=1000, help="metric rows to seed")
    parser.add_argument("--embeddings-mb", type=int, default=1024, help="0 skips the download")
    args = parser.parse_args()

    url = create_database()
    home = Path(tempfile.mkdtemp(prefix="trainctl-bench-"))
    server = None
    try:
        key, job_id = seed(url, args.epochs)
        port = free_port()
        server = start_api(url, home, port, args.workers)
        print(
            f"# {os.cpu_count()} CPUs (load average {os.getloadavg()[0]:.1f} before), uvicorn "
            f"--workers {args.workers}, {args.pollers} pollers, {args.seconds:.0f} s per case, "
            f"job with {args.epochs} metric rows"
        )
        metrics = f"/jobs/{job_id}/metrics"
        cases = [
            ("/healthz (reference)", "/healthz"),
            ("metrics, new rows only (after_epoch=last)", f"{metrics}?after_epoch={args.epochs}"),
            ("metrics, last 10 rows", f"{metrics}?after_epoch={args.epochs - 10}"),
            (f"metrics, all {args.epochs} rows", metrics),
        ]
        # The same requests with the ETag of their last answer (nothing changed: 304s).
        conditional_cases = [
            ("metrics, new rows only, If-None-Match (304)", cases[1][1]),
            (f"metrics, all {args.epochs} rows, If-None-Match (304)", metrics),
        ]
        print_table(
            "back to back: each poller sends its next request when the last one is answered",
            [(label, load(port, path, key, args.pollers, args.seconds)) for label, path in cases]
            + [
                (label, load(port, path, key, args.pollers, args.seconds, conditional=True))
                for label, path in conditional_cases
            ],
        )
        print_table(
            f"paced: each poller polls every {args.interval} s "
            f"({args.pollers / args.interval:.0f} req/s offered)",
            [
                (label, load(port, path, key, args.pollers, args.seconds, args.interval))
                for label, path in cases[:3]
            ]
            + [
                (label, load(port, path, key, args.pollers, args.seconds, args.interval, True))
                for label, path in conditional_cases[:1]
            ],
        )

        if args.embeddings_mb:
            run_dir = home / "runs" / job_id
            run_dir.mkdir(parents=True)
            size = write_embeddings(run_dir / "embeddings.npy", args.embeddings_mb)
            engine = make_engine(url)
            with session_scope(session_factory(engine)) as session:
                queries.upsert_artifact(
                    session, job_id, kind="embeddings", name="embeddings.npy",
                    path=f"{job_id}/embeddings.npy", size=size, sha256="",
                )  # fmt: skip
            engine.dispose()
            print()
            proc = psutil.Process(server.pid)
            rates = {}
            # npy twice (the second run is the warm one); parquet converted by the API while it
            # sends (a run from before TRAINCTL_EXPORT_FORMATS, or a format not kept), then as
            # the worker keeps it at job end (the conversion timed here), sent from disk.
            cases = [("npy", "npy"), ("npy", "npy"), ("parquet", "parquet (converting)"),
                     ("parquet", "parquet (kept)"), ("safetensors", "safetensors")]  # fmt: skip
            for fmt, label in cases:
                if label == "parquet (kept)":
                    print(keep_as_the_worker_does(url, home / "runs", job_id))
                r = download(port, f"/jobs/{job_id}/embeddings?format={fmt}", key, proc)
                rates[label] = r["mb_s"]
                print(
                    f"GET /jobs/{{id}}/embeddings?format={fmt} [{label}], {size / 1e6:.0f} MB "
                    f"array: {r['mb_s']:.0f} MB/s of response ({r['seconds']:.2f} s), "
                    f"API process RSS growth {r['rss_mb']:.1f} MB"
                )
            for label in ("parquet (converting)", "parquet (kept)", "safetensors"):
                print(f"{label} / npy throughput: {rates[label] / rates['npy']:.2f}")
    finally:
        if server is not None:
            server.terminate()
            server.wait(30)
        drop_database(url)
        for path in sorted(home.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        home.rmdir()


if __name__ == "__main__":
    main()
