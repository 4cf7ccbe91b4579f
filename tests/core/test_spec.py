"""Job specs: YAML and JSON load alike, overrides validate like the file, and a bad spec
reports every bad field with the allowed values."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from core.spec import SpecError, dump_spec, load_spec
from tests.support.specs import tiny_cora


def test_yaml_and_json_load_to_the_same_model():
    data = tiny_cora()
    assert load_spec(yaml.safe_dump(data)) == load_spec(json.dumps(data)) == load_spec(data)


def test_dump_round_trips_with_every_default():
    spec = load_spec(tiny_cora())
    again = load_spec(dump_spec(spec))
    assert again == spec
    assert "scheduler" in yaml.safe_load(dump_spec(spec))


def test_overrides_are_validated_like_the_file():
    spec = load_spec(tiny_cora(), ["training.epochs=9", "optimizer.name=adamw", "walks.window=3"])
    assert (spec.training.epochs, spec.optimizer.name, spec.walks.window) == (9, "adamw", 3)
    with pytest.raises(SpecError) as err:
        load_spec(tiny_cora(), ["optimizer.name=rmsprop"])
    assert err.value.errors[0]["loc"] == "optimizer.name"
    assert err.value.errors[0]["allowed"] == ["adam", "adamw", "sgd"]


def test_every_bad_field_is_reported_at_once_with_allowed_values():
    bad = tiny_cora(
        optimizer={"name": "rmsprop", "lr": -1},
        scheduler={"name": "bogus"},
        model={"aggregator": "median", "layerz": 3},
    )
    with pytest.raises(SpecError) as err:
        load_spec(bad)
    by_loc = {e["loc"]: e for e in err.value.errors}
    assert set(by_loc) == {
        "optimizer.name",
        "optimizer.lr",
        "scheduler.name",
        "model.aggregator",
        "model.layerz",
    }
    assert by_loc["scheduler.name"]["allowed"] == [
        "none", "cosine", "step", "plateau", "linear_warmup", "onecycle"
    ]  # fmt: skip
    assert by_loc["model.aggregator"]["allowed"] == ["mean", "max", "sum"]
    assert "hidden_dim" in by_loc["model.layerz"]["allowed"]
    assert "optimizer.name" in str(err.value)


@pytest.mark.parametrize(
    ("source", "loc", "fragment"),
    [
        ({"family": "nope"}, "family", "graphsage_skipgram"),
        ({"data": {}}, "family", "missing"),
        ("- a list", "", "mapping"),
        ("a: [unclosed", "", "YAML"),
        (tiny_cora(walks={"window": 9, "walk_length": 8}), "walks", "smaller than"),
        (
            tiny_cora(data={"format": "edge_list", "path": "../../etc/passwd"}),
            "data.path",
            "relative",
        ),
        (tiny_cora(optimizer={"kwargs": {"momentum": 0.9}}), "optimizer", "betas"),
    ],
)
def test_bad_specs_name_the_field(source, loc, fragment):
    with pytest.raises(SpecError) as err:
        load_spec(source)
    first = err.value.errors[0]
    assert first["loc"] == loc
    assert fragment in first["msg"]


def test_spec_module_imports_without_torch():
    code = "import sys, core.spec; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    "override, message",
    [
        ("training.epochs=1000000000000", "less than or equal to 100000"),
        ("optimizer.lr=.inf", "finite number"),
        ("optimizer.lr=.nan", "finite number"),
        ("training.gradient_clip=1e300", "less than or equal to 1000000"),
        ("training.seed=-1", "greater than or equal to 0"),
        ("checkpoint.keep_top_k=100000", "less than or equal to 100"),
    ],
)
def test_every_number_is_bounded_and_finite(override, message):
    with pytest.raises(SpecError) as err:
        load_spec(tiny_cora(), [override])
    assert message in err.value.errors[0]["msg"], err.value.errors
