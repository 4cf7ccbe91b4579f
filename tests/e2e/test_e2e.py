"""End to end on the production stack: the API (uvicorn) and a real Celery worker as separate
processes, started with the commands of docker-compose.yml, on a throwaway PostgreSQL database
and Redis (a queue of their own), training the real core on Cora.

The client side goes through the `trainctl` client commands where a user would.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
import redis
from click.testing import CliRunner

from cli.main import main as trainctl
from store.broker import TASK_NAME, make_celery
from store.settings import Settings
from tests.support.e2e import (
    CLI,
    CORA_NODES,
    TINY_CORA,
    Api,
    Proc,
    compose_command,
    free_port,
    healthy,
    service_env,
    wait_for,
)
from tests.support.service import create_pg_database, drop_pg_database

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

REDIS_SERVER = "redis://127.0.0.1:6379"
REDIS_DB = 11  # the e2e tests' own database number; each run has its own queue in it
JOB_TIMEOUT_S = 240


@dataclass
class Service:
    url: str
    key: str
    env: dict[str, str]
    api: Api
    procs: list[Proc]
    worker: Proc
    home: Path

    def cli(self, *args: str) -> Any:
        """Run a `trainctl` client command in-process, as a user would from a shell."""
        env = {"TRAINCTL_URL": self.url, "TRAINCTL_API_KEY": self.key, "TRAINCTL_HOME": None}
        return CliRunner().invoke(trainctl, list(args), env=env, catch_exceptions=False)

    def submit(self, spec: dict[str, Any], tmp: Path, *overrides: str) -> str:
        path = tmp / f"spec-{uuid.uuid4().hex[:6]}.json"
        path.write_text(json.dumps(spec))
        sets = [a for o in overrides for a in ("--set", o)]
        result = self.cli("submit", str(path), *sets)
        assert result.exit_code == 0, result.output
        return result.output.strip().splitlines()[-1]


def _redis_available() -> None:
    try:
        redis.Redis.from_url(REDIS_SERVER, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis not reachable at {REDIS_SERVER}: {exc}")


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    _redis_available()
    home = tmp_path_factory.mktemp("e2e-home")
    db_url = create_pg_database("trainctl_e2e")
    queue = f"trainctl-e2e-{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = service_env(
        DATABASE_URL=db_url,
        REDIS_URL=f"{REDIS_SERVER}/{REDIS_DB}",
        TRAINCTL_QUEUE=queue,
        TRAINCTL_HOME=str(home),
        TRAINCTL_API_HOST="127.0.0.1",
        TRAINCTL_API_PORT=str(port),
        TRAINCTL_WORKER_CONCURRENCY="2",
        TRAINCTL_CANCEL_GRACE_SECONDS="5",
        # A worker killed outright is noticed within seconds (production: 5 s beats, 60 s).
        TRAINCTL_HEARTBEAT_SECONDS="1",
        TRAINCTL_STALE_AFTER_SECONDS="10",
    )
    procs: list[Proc] = []
    api = None
    try:
        migrate = Proc("migrate", compose_command("migrate"), env, home)
        assert migrate.popen.wait(120) == 0, migrate.log()
        keys = Proc("keys", [*CLI, "keys", "create", "e2e"], env, home)
        assert keys.popen.wait(60) == 0, keys.log()
        key = keys.log().splitlines()[-1].strip()
        procs.append(Proc("api", compose_command("api"), env, home))
        procs.append(Proc("worker", compose_command("worker"), env, home))
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: healthy(url), 60, "the API to answer /healthz", procs)
        wait_for(lambda: "ready" in procs[1].log(200), 60, "the Celery worker to be ready", procs)
        api = Api(url, key)
        yield Service(url, key, env, api, procs, procs[1], home)
    finally:
        if api is not None:
            api.close()
        for proc in reversed(procs):
            proc.stop()
        client = redis.Redis.from_url(f"{REDIS_SERVER}/{REDIS_DB}")
        client.delete(queue, f"_kombu.binding.{queue}")
        drop_pg_database(db_url)


def test_submit_train_follow_download(service: Service, tmp_path: Path) -> None:
    job_id = service.submit(
        TINY_CORA, tmp_path, "training.epochs=5", "training.log_every_n_steps=1"
    )
    api, procs = service.api, service.procs

    # Metric rows appear while the job runs, not only once it is done.
    def metrics_while_running() -> dict[str, Any] | None:
        page = api.get(f"/jobs/{job_id}/metrics")
        if page["status"] in ("failed", "cancelled", "succeeded") and not page["count"]:
            pytest.fail(f"job finished ({page['status']}) before any metric row was seen")
        return page if page["count"] and page["status"] == "running" else None

    seen = wait_for(metrics_while_running, JOB_TIMEOUT_S, "a metric row while running", procs)
    # All five rows may already be in while the job still writes its outputs: the point is
    # that rows are there while it runs.
    assert 1 <= seen["count"] <= 5
    assert api.job(job_id)["progress"] > 0

    job = api.wait_finished(job_id, JOB_TIMEOUT_S, procs)
    assert job["status"] == "succeeded", job["error"]
    assert job["attempt"] == 1
    assert job["progress"] == 1.0

    result = service.cli("metrics", job_id)
    assert result.exit_code == 0
    assert [line.split()[1] for line in result.output.splitlines()] == ["1", "2", "3", "4", "5"]
    assert "train_loss=" in result.output and "val_loss=" in result.output
    steps = api.get(f"/jobs/{job_id}/metrics", params={"granularity": "step"})["data"]
    assert steps and [s["step"] for s in steps] == sorted({s["step"] for s in steps})
    assert {"train_loss", "lr", "grad_norm"} <= set(steps[-1]["values"]), steps[-1]

    result = service.cli("artifacts", job_id)
    assert result.exit_code == 0, result.output
    kinds = {line.split()[1] for line in result.output.splitlines()[1:]}
    assert {"checkpoint", "embeddings", "ids", "summary"} <= kinds, result.output

    out = tmp_path / "emb.npy"
    result = service.cli("download", job_id, "embeddings", "-o", str(out))
    assert result.exit_code == 0, result.output
    emb = np.load(out)
    assert emb.shape == (CORA_NODES, 16) and emb.dtype == np.float32
    assert np.isfinite(emb).all()

    csv_out = tmp_path / "emb.csv"
    result = service.cli("download", job_id, "embeddings", "--format", "csv", "-o", str(csv_out))
    assert result.exit_code == 0, result.output
    lines = csv_out.read_text().splitlines()
    assert len(lines) == CORA_NODES + 1 and lines[0].startswith("node_id,dim_0,")

    ckpt = tmp_path / "best.pt"
    result = service.cli("download", job_id, "checkpoint", "-o", str(ckpt))
    assert result.exit_code == 0, result.output
    rows = api.get(f"/jobs/{job_id}/checkpoints")["data"]
    best = [r for r in rows if r["tag"] == "best"]
    assert len(best) == 1, rows
    assert hashlib.sha256(ckpt.read_bytes()).hexdigest() == best[0]["sha256"]
    assert ckpt.stat().st_size == best[0]["size"]

    result = service.cli("logs", job_id, "--tail", "50")
    assert result.exit_code == 0 and "loaded Cora: 2708 nodes" in result.output, result.output

    result = service.cli("logs", job_id, "-f")  # a finished job: the whole log, then it ends
    assert result.exit_code == 0 and "loaded Cora: 2708 nodes" in result.output, result.output

    result = service.cli("status", job_id)
    assert "succeeded" in result.output
    assert "result:\n  training:   ran 5 of 5 epochs" in result.output, result.output
    assert f"trainctl download {job_id} embeddings -o embeddings.npy" in result.output
    result = service.cli("jobs", "--status", "succeeded")
    assert job_id in result.output


def test_follow_prints_epochs_live_and_exits_zero(service: Service, tmp_path: Path) -> None:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(TINY_CORA))
    result = service.cli("submit", str(path), "--set", "training.epochs=2", "--follow")
    assert result.exit_code == 0, result.output
    epochs = [line for line in result.output.splitlines() if line.startswith("epoch")]
    assert len(epochs) == 2, result.output
    # The phases as they go (the first ones may pass between two polls of the stream).
    assert "running: training (2 epochs)" in result.output, result.output
    assert "result:\n  training:   ran 2 of 2 epochs\n  best:       epoch" in result.output
    assert "succeeded" in result.output.splitlines()[-1]


def test_cancel_mid_run_leaves_no_training_process(service: Service, tmp_path: Path) -> None:
    job_id = service.submit(TINY_CORA, tmp_path, "training.epochs=500")
    api, procs = service.api, service.procs
    wait_for(
        lambda: api.get(f"/jobs/{job_id}/metrics")["count"] >= 1,
        JOB_TIMEOUT_S,
        "the first epoch",
        procs,
    )
    training = [p for p in service.worker.descendants() if _is_training(p)]
    assert training, "no training process found under the worker"

    result = service.cli("cancel", job_id)
    assert result.exit_code == 0, result.output
    assert "cancel requested" in result.output
    job = api.wait_finished(job_id, 30, procs)
    assert job["status"] == "cancelled"
    wait_for(lambda: not [p for p in training if _alive(p)], 5, "training processes to go")
    assert not [p for p in service.worker.descendants() if _is_training(p)]

    result = service.cli("cancel", job_id)  # a finished job: the API's 409, said plainly
    assert result.exit_code == 1
    assert "409 job already finished (cancelled)" in result.output
    assert service.cli("wait", job_id).exit_code == 3  # cancelled

    # Retried: a new attempt that resumes from the cancelled one's last checkpoint.
    result = service.cli("retry", job_id)
    assert result.exit_code == 0 and "queued" in result.output, result.output
    page = wait_for(
        lambda: (p := api.get(f"/jobs/{job_id}/metrics?attempt=2"))["count"] and p,
        JOB_TIMEOUT_S,
        "the second attempt's first epoch",
        procs,
    )
    assert page["data"][0]["epoch"] > 1, "the retry started from scratch"
    service.cli("cancel", job_id)
    result = service.cli("wait", job_id, "--timeout", "60")
    assert result.exit_code == 3, result.output

    result = service.cli("delete", job_id, "--yes")
    assert result.exit_code == 0, result.output
    assert not (service.home / "runs" / job_id).exists()


def test_duplicate_delivery_trains_once(service: Service, tmp_path: Path) -> None:
    job_id = service.submit(TINY_CORA, tmp_path, "training.epochs=3")
    # The same task once more, as a broker redelivery would: the worker runs both at once.
    settings = Settings(
        REDIS_URL=service.env["REDIS_URL"], TRAINCTL_QUEUE=service.env["TRAINCTL_QUEUE"]
    )
    make_celery(settings).send_task(TASK_NAME, args=[job_id], queue=settings.queue)
    job = service.api.wait_finished(job_id, JOB_TIMEOUT_S, service.procs)
    assert job["status"] == "succeeded", job["error"]
    wait_for(
        lambda: f"job {job_id}: not queued" in service.worker.log(2000),
        30,
        "the duplicate delivery to be skipped",
        service.procs,
    )
    assert service.api.job(job_id)["attempt"] == 1
    page = service.api.get(f"/jobs/{job_id}/metrics")
    assert [row["epoch"] for row in page["data"]] == [1, 2, 3]
    assert page["attempt"] == 1


def test_missing_dataset_fails_with_the_root_cause(service: Service, tmp_path: Path) -> None:
    path = tmp_path / "spec.json"
    # Neither an upload nor a folder of the data roots: refused at submit, nothing queued.
    path.write_text(
        json.dumps({**TINY_CORA, "data": {"format": "edge_list", "path": "nowhere/edges.csv"}})
    )
    result = service.cli("submit", str(path))
    assert result.exit_code == 1, result.output
    assert "422 invalid request:\n  data.path: no upload named 'nowhere'" in result.output

    # A file missing inside a data root's folder: the worker's root cause.
    path.write_text(
        json.dumps({**TINY_CORA, "data": {"format": "edge_list", "path": "Cora/nowhere.csv"}})
    )
    result = service.cli("submit", str(path), "--follow")
    assert result.exit_code == 1, result.output
    assert "failed: DatasetNotFound" in result.output

    job_id = result.output.splitlines()[0].strip()
    job = service.api.job(job_id)
    assert job["status"] == "failed"
    assert job["error"].startswith("DatasetNotFound: dataset 'Cora/nowhere.csv' not found")
    assert "looked in" in job["error"]
    result = service.cli("wait", job_id)
    assert (result.exit_code, result.output) == (1, f"job {job_id} failed: {job['error']}\n")


def test_a_wrong_key_is_refused_plainly(service: Service, tmp_path: Path) -> None:
    env = {"TRAINCTL_URL": service.url, "TRAINCTL_API_KEY": "tc_wrong", "TRAINCTL_HOME": None}
    result = CliRunner().invoke(trainctl, ["jobs"], env=env)
    assert result.exit_code == 1
    assert "401 invalid API key (set TRAINCTL_API_KEY" in result.output


def test_invalid_spec_is_refused_with_the_fields(service: Service, tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({**TINY_CORA, "optimizer": {"name": "adagrad"}}))
    result = service.cli("submit", str(path), "--set", "training.epochs=0")
    assert result.exit_code == 1
    assert "422 invalid request:" in result.output
    assert "optimizer.name:" in result.output and "adam" in result.output
    assert "training.epochs:" in result.output


def test_a_killed_worker_leaves_no_run_behind_and_its_job_resumes(
    service: Service, tmp_path: Path
) -> None:
    job_id = service.submit(TINY_CORA, tmp_path, "training.epochs=6")
    api = service.api
    wait_for(
        lambda: api.get(f"/jobs/{job_id}/metrics")["count"] >= 1,
        JOB_TIMEOUT_S,
        "the first epoch",
        service.procs,
    )
    training = [p for p in service.worker.descendants() if _is_training(p)]
    assert training

    service.worker.popen.kill()  # SIGKILL: no shutdown code runs in the worker
    service.worker.popen.wait(10)
    # The kernel's parent-death signal stops the launcher, which stops its ranks.
    wait_for(lambda: not [p for p in training if _alive(p)], 40, "the orphaned run to stop")
    assert api.job(job_id)["status"] == "running"  # as the dead worker left it

    worker = Proc("worker-2", compose_command("worker"), service.env, service.home)
    service.procs[service.procs.index(service.worker)] = worker
    service.worker = worker
    job = api.wait_finished(job_id, JOB_TIMEOUT_S, service.procs)
    assert job["status"] == "succeeded", job["error"]
    assert job["attempt"] == 2
    assert f"job {job_id}: its worker stopped reporting; requeued" in worker.log(2000)


def _is_training(p: psutil.Process) -> bool:
    try:
        cmdline = p.cmdline()
    except psutil.Error:
        return False
    return "core.run" in cmdline or "torch.distributed.run" in cmdline


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
