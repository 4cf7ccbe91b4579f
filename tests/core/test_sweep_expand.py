"""Sweep expansion (`core.spec.sweep`): grid x zip order, ranges (float steps included), dotted
keys into sections and lists, errors naming the field, the member cap, and validation of every
member with the single-job loader."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.spec import SpecError, parse_spec_text
from core.spec.sweep import parse_sweep, set_dotted, validate_members

REPO = Path(__file__).resolve().parents[2]
BASE = yaml.safe_load((REPO / "examples" / "mutag-10fold-group.yaml").read_text())["spec"]


def locs(exc: pytest.ExceptionInfo[SpecError]) -> list[str]:
    return [e["loc"] for e in exc.value.errors]


def test_grid_is_a_product_crossed_with_each_zip_block_last_axis_fastest():
    sweep = parse_sweep(
        {
            "grid": {"a": [1, 2], "b": ["x", "y"]},
            "zip": [{"c": [10, 20], "d": [True, False]}, {"e": [None]}],
        }
    )
    assert sweep.size == 2 * 2 * 2 * 1
    assert sweep.keys == ["a", "b", "c", "d", "e"]
    assert sweep.values() == [
        {"a": a, "b": b, "c": c, "d": d, "e": None}
        for a in (1, 2)
        for b in ("x", "y")
        for c, d in ((10, True), (20, False))
    ]
    assert parse_sweep({"zip": [{"k": [1, 2, 3], "j": [3, 2, 1]}]}).values() == [
        {"k": 1, "j": 3}, {"k": 2, "j": 2}, {"k": 3, "j": 1}
    ]  # fmt: skip


def test_ranges_exclude_stop_and_float_steps_do_not_drift():
    grid = parse_sweep(
        {
            "grid": {
                "fold": {"range": [0, 10, 1]},
                "two": {"range": [0, 3]},  # step 1 by default
                "lr": {"range": [0.1, 1.0, 0.1]},
                "down": {"range": [1, 0, -0.25]},
                "odd": {"range": [0, 1, 0.3]},
            }
        },
        max_members=None,
    ).grid
    assert grid["fold"] == list(range(10)) and all(type(v) is int for v in grid["fold"])
    assert grid["two"] == [0, 1, 2]
    # numpy.arange(0.1, 1.0, 0.1) has 9 values; 0.1 * 3 is written 0.3, not 0.30000000000000004.
    assert grid["lr"] == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    assert grid["down"] == [1.0, 0.75, 0.5, 0.25]
    assert grid["odd"] == [0.0, 0.3, 0.6, 0.9]


@pytest.mark.parametrize(
    ("sweep", "loc", "words"),
    [
        ({"grid": {"a..b": [1]}}, "sweep.grid.a..b", "bad key"),
        ({"grid": {".a": [1]}}, "sweep.grid..a", "bad key"),
        ({"grid": {"a.": [1]}}, "sweep.grid.a.", "bad key"),
        ({"grid": {"a b": [1]}}, "sweep.grid.a b", "bad key"),
        ({"grid": {"0.a": [1]}}, "sweep.grid.0.a", "bad key"),
        ({"grid": {"family": ["x"]}}, "sweep.grid.family", "one family"),
        ({"grid": {"a": []}}, "sweep.grid.a", "empty list"),
        ({"grid": {"a": 3}}, "sweep.grid.a", "a list of values"),
        ({"grid": {"a": {"range": [0, 1, 0]}}}, "sweep.grid.a.range", "step must not be 0"),
        ({"grid": {"a": {"range": [5, 1]}}}, "sweep.grid.a.range", "gives no values"),
        ({"grid": {"a": {"range": [0, "9"]}}}, "sweep.grid.a.range", "numbers only"),
        ({"grid": {"a": {"range": [0]}}}, "sweep.grid.a.range", "[start, stop]"),
        ({"grid": {"a": {"range": [0, 10**9]}}}, "sweep.grid.a.range", "far over any cap"),
        ({"grid": {"a": {"range": [0, 2], "step": 1}}}, "sweep.grid.a", "a list of values"),
        ({"zip": [{"a": [1, 2], "b": [1]}]}, "sweep.zip.0", "one length; got a: 2, b: 1"),
        ({"zip": [{}]}, "sweep.zip.0", "non-empty mapping"),
        ({"zip": {"a": [1]}}, "sweep.zip", "a list of mappings"),
        ({"grid": {"a": [1]}, "zip": [{"a": [2]}]}, "sweep.a", "swept twice"),
        ({"grid": {"m": [{}], "m.x": [1]}}, "sweep.m.x", "inside the swept key 'm'"),
        ({"grid": {"a": [1]}, "other": 1}, "sweep.other", "unknown field; allowed: grid, zip"),
        ({}, "sweep", "empty"),
        ([1, 2], "sweep", "a mapping"),
    ],
)
def test_a_bad_sweep_names_the_field(sweep, loc, words):
    with pytest.raises(SpecError) as exc:
        parse_sweep(sweep)
    assert loc in locs(exc)
    assert any(words in e["msg"] for e in exc.value.errors), exc.value.errors


def test_every_problem_is_listed_at_once():
    with pytest.raises(SpecError) as exc:
        parse_sweep({"grid": {"a..b": [1], "c": []}, "zip": [{"d": [1], "e": [1, 2]}]})
    assert locs(exc) == ["sweep.grid.a..b", "sweep.grid.c", "sweep.zip.0"]


def test_the_cap_is_checked_on_the_count_before_any_value_is_made():
    with pytest.raises(SpecError) as exc:
        parse_sweep({"grid": {"a": {"range": [0, 500_000]}, "b": {"range": [0, 500_000]}}})
    (error,) = exc.value.errors
    assert error["msg"] == "the sweep has 250000000000 members; the cap is 256"
    assert (error["count"], error["cap"]) == (250_000_000_000, 256)
    assert parse_sweep({"grid": {"a": {"range": [0, 256]}}}).size == 256
    with pytest.raises(SpecError, match="the sweep has 257 members; the cap is 256"):
        parse_sweep({"grid": {"a": {"range": [0, 257]}}})
    with pytest.raises(SpecError, match="the cap is 4"):
        parse_sweep({"grid": {"a": [1, 2, 3]}, "zip": [{"b": [1, 2]}]}, max_members=4)


def test_set_dotted_copies_only_the_path_and_creates_sections():
    base = {"model": {"encoder": [{"out": 64}, {"out": 64}], "heads": 2}, "data": {"x": 1}}
    out = set_dotted(base, "model.encoder.1.out", 32)
    out = set_dotted(out, "training.optimizer.lr", 0.1)  # missing sections are created
    assert out["model"]["encoder"] == [{"out": 64}, {"out": 32}]
    assert out["training"] == {"optimizer": {"lr": 0.1}}
    assert out["data"] is base["data"]  # untouched branches are shared, not copied
    assert base["model"]["encoder"][1] == {"out": 64} and "training" not in base
    assert set_dotted(base, "model.encoder.0", {"out": 8})["model"]["encoder"][0] == {"out": 8}


@pytest.mark.parametrize(
    ("key", "words"),
    [
        ("model.heads.x", "model.heads is a value (int), not a section"),
        ("model.encoder.5.out", "index 5 out of range; model.encoder has 2 items"),
        ("model.encoder.first", "model.encoder is a list; 'first' is not an index"),
    ],
)
def test_set_dotted_refuses_a_path_it_cannot_follow(key, words):
    base = {"model": {"encoder": [{"out": 64}, {"out": 64}], "heads": 2}}
    with pytest.raises(ValueError) as exc:
        set_dotted(base, key, 1)
    assert str(exc.value) == f"{key}: {words}"


def test_every_member_is_validated_with_the_single_job_loader():
    sweep = parse_sweep({"grid": {"data.split.fold": {"range": [0, 12]}}})
    valid, failures = validate_members(BASE, sweep)
    assert [m.index for m, _ in valid] == list(range(10))
    assert [spec.data.split.fold for _, spec in valid] == list(range(10))
    assert [f["index"] for f in failures] == [10, 11]
    assert failures[0] == {
        "index": 10,
        "values": {"data.split.fold": 10},
        "errors": [{"loc": "data.split", "msg": "split.fold (10) must be in 0..9 (split.k - 1)"}],
    }


def test_a_key_through_a_value_or_a_field_the_family_lacks_fails_that_member():
    sweep = parse_sweep({"grid": {"training.epochs.x": [1], "model.nope": [2, 3]}})
    valid, failures = validate_members(BASE, sweep)
    assert valid == [] and [f["index"] for f in failures] == [0, 1]
    assert failures[0]["errors"][0]["msg"].startswith("training.epochs.x: training.epochs is a")
    sweep = parse_sweep({"grid": {"model.nope": [2]}})
    (failure,) = validate_members(BASE, sweep)[1]
    (error,) = failure["errors"]
    assert error["loc"] == "model.nope" and "channels" in error["allowed"]


def test_multi_seed_and_kfold_from_a_yaml_base_and_the_base_is_not_changed():
    base = parse_spec_text((REPO / "examples" / "mutag-graph-transformer.yaml").read_text())
    before = yaml.safe_dump(base)
    sweep = parse_sweep({"grid": {"training.seed": [0, 1, 2], "data.split.fold": [0, 1]}})
    valid, failures = validate_members(base, sweep)
    assert failures == []
    assert [(s.training.seed, s.data.split.fold) for _, s in valid] == [
        (0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)
    ]  # fmt: skip
    assert yaml.safe_dump(base) == before


def test_the_module_does_not_import_torch():
    import subprocess

    code = "import sys, core.spec.sweep; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert out.stdout.strip() == "False"


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
_axis = (
    st.lists(_json, max_size=4)
    | st.fixed_dictionaries({"range": st.lists(st.integers() | st.floats(), max_size=4)})
    | _json
)
_keys = st.sampled_from(["a", "a.b", "a.0", "training.seed", "x..y", "", "family"]) | st.text(
    max_size=10
)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    grid=st.dictionaries(_keys, _axis, max_size=3),
    zips=st.lists(st.dictionaries(_keys, _axis, max_size=3), max_size=2) | _json,
    extra=st.dictionaries(st.sampled_from(["grid", "zip", "other"]), _json, max_size=1),
)
def test_any_sweep_is_parsed_or_refused_with_a_spec_error(grid, zips, extra):
    """Whatever a request holds, parsing a sweep ends in a Sweep within the cap or a SpecError
    (never another exception, never a huge allocation)."""
    try:
        sweep = parse_sweep({"grid": grid, "zip": zips, **extra})
    except SpecError as exc:
        assert exc.errors and all("loc" in e and "msg" in e for e in exc.errors)
        return
    assert 1 <= sweep.size <= 256
    assert len(sweep.values()) == sweep.size
