"""Benchmark: expanding and validating a 256-member sweep, beside validating one spec 256 times.

    python bench/bench_sweep.py [--repeats 5]

The sweep is the MUTAG 10-fold example's spec (examples/mutag-10fold-group.yaml) over
`training.seed` (32 values) x `data.split.fold` (8 values) = 256 members. Timed, in one process
after one warm-up (the API's process is warm):

- `sweep`: what `POST /groups` does before it stores anything (`api.sweeps.prepare_group`):
  parse the JSON body, check the sweep, expand it, validate every member with the single-job
  loader and dump each member's spec for storing;
- `reference`: `core.spec.load_spec` of the base spec, 256 times (validating 256 specs alone).

Prints the medians in seconds and their ratio; the target is `sweep` < 1 s. Where PostgreSQL
answers (`TRAINCTL_TEST_PG`, default postgresql://postgres@127.0.0.1:5432), also how long
storing the 256 members in one transaction takes (`store.groups.create_group`, on a throwaway
database), for information.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from api.sweeps import prepare_group  # noqa: E402
from core.spec import load_spec  # noqa: E402

MEMBERS = 256
EXAMPLE = REPO / "examples" / "mutag-10fold-group.yaml"
PG_SERVER = os.environ.get("TRAINCTL_TEST_PG", "postgresql://postgres@127.0.0.1:5432")


def store_seconds(body: bytes, repeats: int) -> float | None:
    """Median seconds to store the prepared group in one transaction; None without PostgreSQL."""
    try:
        import psycopg
        from sqlalchemy.orm import Session

        from store.db import make_engine, session_factory, session_scope
        from store.groups import create_group
        from store.keys import get_or_create_owner
        from store.migrate import upgrade_head
    except ImportError:
        return None
    name = f"trainctl_bench_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True, connect_timeout=5) as c:
            c.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError:
        return None
    url = f"{PG_SERVER}/{name}"
    try:
        upgrade_head(url)
        engine = make_engine(url)
        with session_scope(session_factory(engine)) as session:
            owner_id = get_or_create_owner(session, "bench").id
        times = []
        for _ in range(repeats):
            prepared = prepare_group(body, True, MEMBERS)
            started = time.perf_counter()
            with Session(engine) as session:
                create_group(
                    session, owner_id, name=prepared.name, family=prepared.family,
                    spec=prepared.spec, sweep=prepared.sweep.as_dict(), metric=prepared.metric,
                    members=prepared.members,
                )  # fmt: skip
                session.commit()
            times.append(time.perf_counter() - started)
        engine.dispose()
        return statistics.median(times)
    finally:
        with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    base = yaml.safe_load(EXAMPLE.read_text())["spec"]
    body = json.dumps(
        {
            "spec": base,
            "sweep": {
                "grid": {"training.seed": {"range": [0, 32]}, "data.split.fold": {"range": [0, 8]}}
            },
        }
    ).encode()

    def sweep() -> int:
        return len(prepare_group(body, True, MEMBERS).members)

    def reference() -> int:
        return sum(1 for _ in range(MEMBERS) if load_spec(base) is not None)

    assert sweep() == MEMBERS and reference() == MEMBERS  # warm-up: registries, pydantic
    times: dict[str, list[float]] = {"sweep": [], "reference": []}
    for _ in range(args.repeats):
        for name, fn in (("sweep", sweep), ("reference", reference)):
            started = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - started)
    sweep_s = statistics.median(times["sweep"])
    ref_s = statistics.median(times["reference"])
    print(f"members:                                {MEMBERS}")
    print(f"sweep: expand + validate + dump (s):    {sweep_s:.3f}  (target < 1 s)")
    print(f"reference: load_spec x {MEMBERS} (s):     {ref_s:.3f}")
    print(f"ratio sweep / reference:                {sweep_s / ref_s:.2f}")
    print(f"per member (ms):                        {1000 * sweep_s / MEMBERS:.2f}")
    stored = store_seconds(body, args.repeats)
    if stored is not None:
        print(f"store: group + {MEMBERS} jobs, 1 transaction (s): {stored:.3f}  (PostgreSQL)")


if __name__ == "__main__":
    main()
