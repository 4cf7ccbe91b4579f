"""Benchmark of the dashboard's job page: its weight and its first render with 1,000 epochs.

    python bench/bench_ui.py [--epochs 1000] [--runs 5]

Seeds a throwaway PostgreSQL database (`TRAINCTL_TEST_PG`, default
postgresql://postgres@127.0.0.1:5432) with a running job holding `--epochs` metric rows (six
metrics each, written through `store.queries.upsert_metric`, as the worker writes them) and a
2,000-line log, starts the API with uvicorn in a subprocess, and opens `/ui#/job/<id>` in
headless Chromium (`/usr/bin/chromium`, driven by playwright) `--runs` times, each in a fresh
browser context (no cache).

Prints, as absolute figures (they depend on the machine; the targets are <= 500 KB and
<= 1 s on the 2-core development machine):
- page weight: the bytes of every asset the page loads (HTML, CSS, JavaScript), and the JSON the
  page reads besides the streams;
- first render: from the start of navigation until the curve shows every epoch's points and the
  metric table every row (the page's own `performance.now()` at that draw).
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
import numpy as np
import psycopg

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from core.launch import free_port  # noqa: E402
from store import queries  # noqa: E402
from store.db import make_engine, session_factory, session_scope  # noqa: E402
from store.keys import create_owner_key, get_or_create_owner  # noqa: E402
from store.migrate import upgrade_head  # noqa: E402

PG_SERVER = os.environ.get("TRAINCTL_TEST_PG", "postgresql://postgres@127.0.0.1:5432")
CHROMIUM = os.environ.get("TRAINCTL_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
SPEC = {
    "family": "graphsage_skipgram",
    "name": "bench-ui",
    "data": {"format": "planetoid", "name": "Cora"},
    "training": {"epochs": 1000},
}


def seed(url: str, home: Path, epochs: int) -> tuple[str, str]:
    """An owner's key and a running job with `epochs` metric rows and a log."""
    upgrade_head(url)
    engine = make_engine(url)
    sessions = session_factory(engine)
    with session_scope(sessions) as session:
        key = create_owner_key(session, "bench")
        owner_id = get_or_create_owner(session, "bench").id
        job_id = queries.create_job(session, owner_id, SPEC, family=SPEC["family"], name="bench").id
    with session_scope(sessions) as session:
        job = queries.claim_job(session, job_id, "bench")
        assert job is not None
        attempt = job.attempt
    rng = np.random.default_rng(0)
    with session_scope(sessions) as session:
        for epoch in range(1, epochs + 1):
            decay = 1.0 / (1 + epoch / 50)
            queries.upsert_metric(
                session,
                job_id,
                attempt,
                epoch,
                {
                    "train_loss": decay + 0.05 * float(rng.random()),
                    "val_loss": decay + 0.1 * float(rng.random()),
                    "val_acc": 1 - decay * 0.5,
                    "lr": 1e-3,
                    "grad_norm": float(rng.random()),
                    "epoch_seconds": 0.5 + float(rng.random()),
                },
            )
    engine.dispose()
    run_dir = home / "runs" / job_id
    run_dir.mkdir(parents=True)
    lines = (f"2026-01-01 00:00:00 INFO epoch {i} train_loss=0.5 val_loss=0.6" for i in range(2000))
    (run_dir / "logs.txt").write_text("\n".join(lines) + "\n")
    return key, job_id


def start_api(url: str, home: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DATABASE_URL": url, "TRAINCTL_HOME": str(home)}
    cmd = [
        sys.executable, "-m", "uvicorn", "api.main:create_app", "--factory",
        "--host", "127.0.0.1", "--port", str(port), "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=REPO, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"uvicorn exited with {proc.returncode}")
        time.sleep(0.2)
    proc.terminate()
    raise RuntimeError("the API did not become ready in 60 s")


def measure(base: str, key: str, job_id: str, epochs: int, runs: int) -> None:
    from playwright.sync_api import sync_playwright

    renders = []
    marks = []
    assets: dict[str, int] = {}
    data: dict[str, int] = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for run in range(runs):
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            context.add_init_script(f"sessionStorage.setItem('trainctl.apiKey', {key!r})")
            page = context.new_page()
            responses: list[Any] = []
            page.on("response", lambda response, seen=responses: seen.append(response))
            page.goto(f"{base}/ui#/job/{job_id}")
            page.wait_for_function(
                "n => (window.trainctlPerf?.draws ?? []).some(d => d.rows >= n)"
                " && Number(document.querySelector('#metric-table-box')?.dataset.rows) >= n",
                arg=epochs,
                timeout=60_000,
            )
            draw_ms = page.evaluate(
                "n => window.trainctlPerf.draws.find(d => d.rows >= n).t", epochs
            )
            renders.append(draw_ms)
            marks.append(page.evaluate("() => window.trainctlPerf.marks"))
            if run == 0:
                for r in responses:
                    path = r.url.removeprefix(base).split("?")[0]
                    if "/stream" in path:
                        continue  # open streams: no body to count yet
                    size = len(r.body())
                    (assets if path.startswith("/ui") else data)[path] = size
            context.close()
        browser.close()
    asset_kb = sum(assets.values()) / 1024
    print(f"job page assets ({len(assets)} files: HTML, CSS, JavaScript): {asset_kb:.1f} KB")
    for path, size in sorted(assets.items()):
        print(f"  {path:32s} {size / 1024:7.1f} KB")
    print(f"JSON read besides the streams: {sum(data.values()) / 1024:.1f} KB ({', '.join(data)})")
    print(
        f"first render, {epochs} epochs x 6 metrics (navigation start -> curve and table "
        f"complete): first {renders[0]:.0f} ms, median of {runs} "
        f"{statistics.median(renders):.0f} ms, min {min(renders):.0f} ms, "
        f"max {max(renders):.0f} ms"
    )
    keys = ("appStart", "jobLoaded", "firstRow", "lastRow", "lastBatch")
    steps = {k: statistics.median(m.get(k, float("nan")) for m in marks) for k in keys}
    print(
        "  median marks (ms from navigation start): "
        + ", ".join(f"{k} {v:.0f}" for k, v in steps.items())
        + f"; {statistics.median(m.get('batches', 0) for m in marks):.0f} render batches taking "
        f"{statistics.median(m.get('batchMs', 0) for m in marks):.0f} ms"
    )
    print("(absolute figures: they depend on the machine and its load; targets <= 500 KB, <= 1 s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    name = f"trainctl_bench_ui_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"{PG_SERVER}/{name}"
    proc = None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            home = Path(tmp)
            key, job_id = seed(url, home, args.epochs)
            port = free_port()
            proc = start_api(url, home, port)
            measure(f"http://127.0.0.1:{port}", key, job_id, args.epochs, args.runs)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
