"""docker-compose.yml and the Dockerfile, checked without Docker: the services, their health
checks, start-up order, profiles and volumes, and that every service runs a `trainctl` command
that exists and that the end-to-end tests run too."""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

import click
import pytest
import yaml

from cli.main import main as trainctl
from store.settings import Settings
from tests.support.e2e import COMPOSE_FILE, REPO, compose_services

DOCKERFILE = REPO / "Dockerfile"
HOME_VOLUME = "trainctl-home"
TRAINCTL_SERVICES = ("migrate", "api", "worker", "worker-cpu")
# Variables read outside `store.settings.Settings`, by the commands and the worker.
OTHER_VARIABLES = {
    "TRAINCTL_API_HOST",  # trainctl api --host
    "TRAINCTL_API_PORT",  # trainctl api --port
    "TRAINCTL_WORKER_CONCURRENCY",  # trainctl worker --concurrency
    "TRAINCTL_CACHE_DIR",  # core.data.roots.cache_dir
}


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    return compose_services()


def depends(service: dict[str, Any]) -> dict[str, str]:
    return {name: dep["condition"] for name, dep in service.get("depends_on", {}).items()}


def test_the_services(services: dict[str, Any]) -> None:
    assert set(services) == {
        "postgres", "redis", "migrate", "api", "worker", "worker-cpu", "flower"
    }  # fmt: skip


def test_health_checks(services: dict[str, Any]) -> None:
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert services["redis"]["healthcheck"]["test"][-2:] == ["redis-cli", "ping"]
    assert "/healthz" in " ".join(services["api"]["healthcheck"]["test"])


def test_start_up_order(services: dict[str, Any]) -> None:
    ready = {
        "postgres": "service_healthy",
        "redis": "service_healthy",
        "migrate": "service_completed_successfully",
    }
    assert depends(services["migrate"]) == {"postgres": "service_healthy"}
    assert services["migrate"]["restart"] == "no"
    for name in ("api", "worker", "worker-cpu"):
        assert depends(services[name]) == ready, name


def test_gpu_worker_and_cpu_profile(services: dict[str, Any]) -> None:
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    assert "profiles" not in services["worker"]
    cpu = services["worker-cpu"]
    assert cpu["profiles"] == ["cpu"]
    assert "deploy" not in cpu
    assert cpu["build"]["args"]["TORCH_INDEX_URL"].endswith("/whl/cpu")
    assert cpu["command"] == services["worker"]["command"]


def test_api_and_workers_share_the_home_volume(services: dict[str, Any]) -> None:
    assert HOME_VOLUME in yaml.safe_load(COMPOSE_FILE.read_text())["volumes"]
    for name in ("api", "worker", "worker-cpu"):
        service = services[name]
        mounts = dict(v.split(":", 1) for v in service["volumes"] if ":" in v)
        assert mounts[HOME_VOLUME] == service["environment"]["TRAINCTL_HOME"], name
        assert service["environment"]["TRAINCTL_ARTIFACT_ROOT"].startswith(
            service["environment"]["TRAINCTL_HOME"]
        )


def test_environment_points_at_the_services_and_is_understood(services: dict[str, Any]) -> None:
    known = {f.alias for f in Settings.model_fields.values() if f.alias} | OTHER_VARIABLES
    for name in TRAINCTL_SERVICES:
        env = services[name]["environment"]
        assert "@postgres:5432/" in env["DATABASE_URL"], name
        assert env["REDIS_URL"].startswith("redis://redis:6379"), name
        unknown = {k for k in env if k not in known}
        assert not unknown, f"{name}: variables nothing reads: {unknown}"


@pytest.mark.parametrize("name", TRAINCTL_SERVICES)
def test_commands_are_trainctl_commands(services: dict[str, Any], name: str) -> None:
    command = services[name]["command"]
    assert command[0] == "trainctl"
    sub = trainctl.get_command(click.Context(trainctl), command[1])
    assert isinstance(sub, click.Command), command
    sub.make_context(command[1], list(command[2:]))  # parses: every option exists


def test_the_e2e_tests_run_the_compose_commands() -> None:
    source = (REPO / "tests" / "e2e" / "test_e2e.py").read_text()
    for name in ("migrate", "api", "worker"):
        assert f'compose_command("{name}")' in source, name


def test_dockerfile_has_a_slim_api_and_a_torch_worker() -> None:
    text = DOCKERFILE.read_text()
    stages = {alias: base for base, alias in re.findall(r"^FROM\s+(\S+)\s+AS\s+(\S+)", text, re.M)}
    assert {"api", "worker"} <= set(stages)
    api = _stage(text, "api")
    worker = _stage(text, "worker")
    installs = [line for line in api.splitlines() if "pip install" in line]
    assert installs == [
        "RUN pip install -r /tmp/requirements-api.txt",
        "RUN pip install --no-deps -e . \\",
    ]
    assert "TORCH_INDEX_URL" in worker and '".[service]"' in worker
    # Both images take the project's files from the one `source` stage.
    assert "COPY --from=source /app ./" in api and "COPY --from=source /app ./" in worker
    copied = set(re.findall(r"^COPY (\S+) /app/", _stage(text, "source"), re.M))
    assert {"core", "store", "api", "worker", "cli", "migrations", "examples"} <= copied
    for name in ("api", "migrate"):
        assert _compose_target(name) == "api"
    for name in ("worker", "worker-cpu"):
        assert _compose_target(name) == "worker"


def test_api_image_requirements_leave_out_the_training_stack() -> None:
    script = re.search(r"<<'PY' > /requirements-api.txt\n(.*?)\nPY\n", DOCKERFILE.read_text(), re.S)
    assert script is not None
    out = subprocess.run(
        [sys.executable, "-c", script.group(1)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    names = {re.split(r"[<>=!~\[]", d, maxsplit=1)[0].lower() for d in out}
    assert {"fastapi", "uvicorn", "sqlalchemy", "celery", "numpy", "pydantic"} <= names
    assert not names & {"torch", "torch_geometric", "rdkit", "scipy", "scikit-learn"}


def _stage(text: str, name: str) -> str:
    match = re.search(rf"^FROM\s+\S+\s+AS\s+{name}\n(.*?)(?=^FROM\s|\Z)", text, re.M | re.S)
    assert match is not None, name
    return match.group(1)


def _compose_target(name: str) -> str:
    return compose_services()[name]["build"]["target"]


def test_dockerignore_keeps_the_context_small() -> None:
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".git", "tests", "data", "runs"} <= set(ignored)
    assert not {"core", "api", "store", "worker", "cli", "migrations"} & set(ignored)
