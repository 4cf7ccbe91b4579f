"""The `trainctl` client commands `artifacts` and `download` against a live API (uvicorn in a
thread, on the test database: the `api_url` and `cli` fixtures of `tests/support/service.py`),
driven through click as a user would from a shell."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy.orm import Session, sessionmaker

from store import queries
from store.db import session_scope
from store.keys import get_or_create_owner
from store.settings import Settings
from tests.service.test_api_files import record, save_npy
from tests.support.service import VALID_SPEC


def new_job(sessions: sessionmaker[Session]) -> str:
    """A job of alice's, the owner of `api_key`."""
    with session_scope(sessions) as session:
        owner_id = get_or_create_owner(session, "alice").id
        return queries.create_job(session, owner_id, VALID_SPEC, family="f", name="t").id


@pytest.fixture
def job_id(sessions: sessionmaker[Session], service_settings: Settings) -> str:
    """A job with a run's artifacts: embeddings keyed through meta, checkpoints, a report."""
    job_id = new_job(sessions)
    emb = np.arange(6, dtype=np.float32).reshape(3, 2)  # [nodes, dim]
    emb_meta = {"shape": [3, 2], "dtype": "float32", "ids": "out/ids.csv"}
    ids = b"row,node_id\n0,a\n1,b\n2,c\n"
    for name, data, fields in [
        ("out/emb.npy", save_npy(emb), {"kind": "embeddings", "meta": emb_meta}),
        ("out/ids.csv", ids, {"kind": "ids", "meta": {"id_column": "node_id"}}),
        ("checkpoints/epoch=1.pt", b"one", {"epoch": 1, "tag": "last"}),
        ("checkpoints/best.pt", b"best", {"epoch": 2, "tag": "best"}),
        ("test_report.json", b'{"acc": 0.9}', {"kind": "report"}),
    ]:
        record(sessions, service_settings, job_id, name, data, **fields)
    return job_id


def test_artifacts_lists_the_jobs_rows(cli, job_id: str, sessions) -> None:
    result = cli("artifacts", job_id)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["NAME", "KIND", "SIZE", "EPOCH", "TAG"]
    assert [line.split() for line in lines[1:]] == [
        ["out/emb.npy", "embeddings", "152"],
        ["out/ids.csv", "ids", "24"],
        ["checkpoints/epoch=1.pt", "checkpoint", "3", "1", "last"],
        ["checkpoints/best.pt", "checkpoint", "4", "2", "best"],
        ["test_report.json", "report", "12"],
    ]
    result = cli("artifacts", job_id, "--kind", "checkpoint")
    assert [line.split()[0] for line in result.output.splitlines()[1:]] == [
        "checkpoints/epoch=1.pt",
        "checkpoints/best.pt",
    ]
    result = cli("artifacts", new_job(sessions))
    assert (result.exit_code, result.output) == (0, "no artifacts yet\n")
    result = cli("artifacts", "no-such-job")
    assert result.exit_code == 1 and "404 job not found" in result.output


def test_download_any_artifact_the_job_lists(cli, job_id: str, tmp_path: Path) -> None:
    for name, content in [
        ("test_report.json", b'{"acc": 0.9}'),
        ("checkpoints/epoch=1.pt", b"one"),
        ("out/ids.csv", b"row,node_id\n0,a\n1,b\n2,c\n"),
    ]:
        out = tmp_path / "x" / Path(name).name
        result = cli("download", job_id, name, "-o", str(out))
        assert result.exit_code == 0, result.output
        assert out.read_bytes() == content
        assert result.output == f"wrote {out} ({len(content)} bytes)\n"


def test_download_aliases_embeddings_and_checkpoint(cli, job_id: str, tmp_path: Path) -> None:
    emb = np.arange(6, dtype=np.float32).reshape(3, 2)
    out = tmp_path / "emb.npy"
    assert cli("download", job_id, "embeddings", "-o", str(out)).exit_code == 0
    np.testing.assert_array_equal(np.load(out), emb)
    expected = [["node_id", "dim_0", "dim_1"], ["a", "0", "1"], ["b", "2", "3"], ["c", "4", "5"]]
    for args in (["--format", "csv"], []):  # the suffix picks the format when --format is left out
        out = tmp_path / f"emb{len(args)}.csv"
        result = cli("download", job_id, "embeddings", *args, "-o", str(out))
        assert result.exit_code == 0, result.output
        assert list(csv.reader(io.StringIO(out.read_text()))) == expected
    out = tmp_path / "named.csv"  # an embeddings artifact by its name converts too
    assert cli("download", job_id, "out/emb.npy", "--format", "csv", "-o", str(out)).exit_code == 0
    assert list(csv.reader(io.StringIO(out.read_text()))) == expected

    out = tmp_path / "best.pt"
    assert cli("download", job_id, "checkpoint", "-o", str(out)).exit_code == 0
    assert out.read_bytes() == b"best"
    assert cli("download", job_id, "checkpoint", "--name", "last", "-o", str(out)).exit_code == 0
    assert out.read_bytes() == b"one"


def test_download_refuses_what_does_not_fit(cli, job_id: str, sessions, tmp_path: Path) -> None:
    out = tmp_path / "out" / "emb.npy"
    result = cli("download", job_id, "embeddings", "--format", "csv", "-o", str(out))
    assert result.exit_code == 2
    assert "--format csv writes CSV, but OUTPUT emb.npy ends in .npy" in result.output
    assert not out.parent.exists()

    result = cli("download", job_id, "nope.pt", "-o", str(out))
    assert result.exit_code == 2
    assert (
        f"job {job_id} has no artifact 'nope.pt'; choose one of: embeddings, checkpoint, "
        "out/emb.npy, out/ids.csv, checkpoints/epoch=1.pt, checkpoints/best.pt, test_report.json"
    ) in " ".join(result.output.split())
    result = cli("download", job_id, "test_report.json", "--format", "csv", "-o", str(out))
    assert result.exit_code == 2 and "--format applies to embeddings only" in result.output
    result = cli("download", job_id, "embeddings", "--name", "last", "-o", str(out))
    assert result.exit_code == 2 and "--name applies to NAME `checkpoint` only" in result.output
    result = cli("download", job_id, "checkpoint", "--name", "nope.pt", "-o", str(out))
    assert result.exit_code == 1 and "404 checkpoint not found" in result.output
    result = cli("download", new_job(sessions), "embeddings", "-o", str(out))
    assert result.exit_code == 1 and "404 embeddings not found" in result.output
    result = cli("download", new_job(sessions), "summary.json", "-o", str(out))
    assert result.exit_code == 2 and "has no artifacts yet" in result.output
    assert not any(out.parent.glob("*"))  # nor a partial file
