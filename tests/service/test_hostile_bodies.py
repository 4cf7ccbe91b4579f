"""Hostile and malformed bodies: deep nesting, tags, broken multipart. Each is a 4xx that stores
nothing, parsed off the event loop so it cannot hold other requests; a fuzzing pass over the
spec parser and the upload route keeps it so (never a 500)."""

from __future__ import annotations

import json
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.spec import SpecError, load_spec
from tests.service.test_api import job_count

HOSTILE_SPECS = [
    pytest.param("a: " + "[" * 2000 + "]" * 2000, "application/yaml", id="yaml-2000-deep"),
    pytest.param(
        "a:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 200)),
        "text/yaml",
        id="yaml-block-200-deep",
    ),  # fmt: skip
    pytest.param("[" * 100_000 + "]" * 100_000, "application/yaml", id="yaml-100000-deep"),
    pytest.param("{" + '"a":{' * 1000 + "}" * 1001, "application/json", id="json-1000-deep"),
    pytest.param("[" * 100_000 + "]" * 100_000, "application/json", id="json-100000-deep"),
    pytest.param(
        "family: x\nmodel: !pyobject torch.nn.Linear\n", "application/yaml", id="yaml-pyobject-tag"
    ),  # fmt: skip
    pytest.param(
        "a: !!python/object/apply:os.system [id]\n", "application/yaml", id="yaml-python-tag"
    ),  # fmt: skip
    pytest.param("\x00\xff garbage", "application/yaml", id="yaml-binary"),
]


@pytest.mark.parametrize("body, content_type", HOSTILE_SPECS)
def test_hostile_specs_are_422_and_store_nothing(client, auth, sessions, body, content_type):
    before = job_count(sessions)
    response = client.post("/jobs", content=body, headers={**auth, "Content-Type": content_type})
    assert response.status_code == 422, response.text[:500]
    assert response.json()["detail"][0]["msg"]
    assert job_count(sessions) == before


def test_a_tag_names_the_field_it_sits_on():
    with pytest.raises(SpecError) as err:
        load_spec("family: graphsage_skipgram\nmodel:\n  layers: !pyobject builtins.int\n")
    (error,) = err.value.errors
    assert error["loc"] == "model.layers"
    assert "line 3: YAML tag '!pyobject' is not allowed" in error["msg"]


def test_a_deep_body_does_not_hold_other_requests(client, auth):
    body = "a: " + "[" * 100_000 + "]" * 100_000
    done: list[int] = []

    def post() -> None:
        response = client.post(
            "/jobs", content=body, headers={**auth, "Content-Type": "application/yaml"}
        )
        done.append(response.status_code)

    threads = [threading.Thread(target=post) for _ in range(4)]
    for t in threads:
        t.start()
    health = client.get("/healthz")
    for t in threads:
        t.join(60)
    assert health.status_code == 200 and done == [422] * 4


MULTIPART_CASES = [
    pytest.param(
        "multipart/form-data; boundary=" + "x" * 5000,
        b"--" + b"x" * 5000 + b"\r\n",
        id="boundary-too-long",
    ),
    pytest.param(
        "multipart/form-data; boundary=B",
        b'--B\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n'
        + b"X-Junk: "
        + b"v" * 20_000
        + b"\r\n\r\n1,2\r\n--B--\r\n",
        id="header-too-long",
    ),
    pytest.param(
        "multipart/form-data; boundary=B",
        b"--B\r\nno colon header\r\n\r\nx\r\n--B--\r\n",
        id="bad-header",
    ),
    pytest.param("multipart/form-data; boundary=B", b"--Bjunk", id="bad-boundary-line"),
    pytest.param("multipart/form-data; boundary=B", b"", id="empty"),
]


@pytest.mark.parametrize("content_type, body", MULTIPART_CASES)
def test_malformed_multipart_is_4xx_and_leaves_no_file(
    client, auth, service_settings, content_type, body
):
    response = client.post(
        "/datasets", content=body, headers={**auth, "Content-Type": content_type}
    )
    assert 400 <= response.status_code < 500, response.text[:500]
    leftovers = [p for p in service_settings.upload_root.rglob("*") if p.is_file()]
    assert leftovers == []


# --- fuzzing ----------------------------------------------------------------------------------

_FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
_yamlish = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20)),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=40,
)


@_FUZZ
@given(text=st.text(max_size=400), as_json=st.booleans())
def test_fuzzed_text_bodies_never_fail_the_server(client, auth, text, as_json):
    content_type = "application/json" if as_json else "application/yaml"
    response = client.post("/jobs", content=text, headers={**auth, "Content-Type": content_type})
    assert response.status_code in (201, 413, 422), response.text[:300]


@_FUZZ
@given(data=_yamlish)
def test_fuzzed_structures_never_fail_the_server(client, auth, data):
    body = json.dumps({"family": "graphsage_skipgram", "data": data, "model": data})
    response = client.post(
        "/jobs", content=body, headers={**auth, "Content-Type": "application/json"}
    )
    assert response.status_code in (201, 422), response.text[:300]


@_FUZZ
@given(
    body=st.binary(max_size=600), boundary=st.from_regex(r"[A-Za-z0-9_.=+-]{1,80}", fullmatch=True)
)
def test_fuzzed_uploads_never_fail_the_server(client, auth, body, boundary):
    prefix = f"--{boundary}\r\n".encode()
    started = time.monotonic()
    response = client.post(
        "/datasets",
        content=prefix + body,
        headers={**auth, "Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert response.status_code in (201, 409, 413, 415, 422), response.text[:300]
    assert time.monotonic() - started < 30


def test_the_first_request_after_the_database_drops_its_connections_succeeds(client, auth, pg_url):
    import psycopg

    from tests.support.service import PG_SERVER

    assert client.get("/jobs", headers=auth).status_code == 200  # pooled connections exist
    name = pg_url.rsplit("/", 1)[1]
    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
        killed = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        ).fetchone()
    assert killed is not None and killed[0] >= 1  # as a PostgreSQL restart does
    assert client.get("/jobs", headers=auth).status_code == 200
