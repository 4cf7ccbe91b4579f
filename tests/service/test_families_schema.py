"""The families and their spec schemas (`GET /families`, `GET /families/{family}/schema`,
`trainctl schema FAMILY`), and tagged YAML specs refused at `POST /jobs` with nothing stored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from cli.main import main as trainctl
from core.spec import family_names, family_schema
from tests.service.test_api import job_count, run_python

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_families_lists_every_registered_family_without_a_key(client):
    response = client.get("/families")
    assert response.status_code == 200
    names = list(family_names())
    assert response.json() == {"data": names, "count": len(names)}
    assert {"graphsage_skipgram", "graph_transformer", "dt_gcnn"} <= set(names)


@pytest.mark.parametrize("family", family_names())
def test_each_family_schema_is_its_spec_models_schema(client, family):
    response = client.get(f"/families/{family}/schema")
    assert response.status_code == 200
    schema = response.json()
    assert schema == family_schema(family)
    assert schema["properties"]["family"]["const"] == family
    assert schema["additionalProperties"] is False  # unknown keys are errors
    # Both early-stopping forms are in the schema (the seed's `Trainer.schema`).
    forms = schema["properties"]["early_stopping"]["anyOf"][0]["oneOf"]
    assert {f["$ref"].rsplit("/", 1)[1] for f in forms} == {
        "EarlyStoppingSpec",
        "MultiTaskEarlyStoppingSpec",
    }


def test_an_unknown_family_is_404_with_the_families(client):
    response = client.get("/families/nope/schema")
    assert response.status_code == 404
    detail = response.json()["detail"]
    assert detail.startswith("unknown family 'nope'; choose one of ")
    assert all(name in detail for name in family_names())


def test_the_schema_describes_the_examples_and_both_early_stopping_forms():
    """Every example spec validates against its family's schema; so does the multi-task form,
    and a mix of the two forms does not."""
    jsonschema = pytest.importorskip("jsonschema")
    checked = 0
    for path in sorted(EXAMPLES.glob("*.yaml")):
        spec = yaml.safe_load(path.read_text())
        if not isinstance(spec, dict) or spec.get("family") not in family_names():
            continue
        jsonschema.validate(spec, family_schema(spec["family"]))
        checked += 1
    assert checked >= 4
    schema = family_schema("graphsage_skipgram")
    base = {"family": "graphsage_skipgram", "data": {"format": "planetoid", "name": "Cora"}}
    multi = {"tasks": [{"monitor": "val_loss", "grace_period": 2}], "aggregate": "all"}
    jsonschema.validate({**base, "early_stopping": multi}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**base, "early_stopping": {**multi, "monitor": "val_loss"}}, schema)


def test_the_api_serves_schemas_without_torch(tmp_path):
    """The routes build every family's schema from the torch-free spec modules."""
    code = (
        "import sys\n"
        "import api.main\n"
        "from api.routes.families import get_family_schema, list_families\n"
        "for name in list_families().data:\n"
        "    assert get_family_schema(name)['properties']['family']['const'] == name\n"
        "assert not [m for m in sys.modules if m == 'torch' or m.startswith('torch.')], 'torch'\n"
    )
    run_python(code, tmp_path)


# --- trainctl schema ---------------------------------------------------------------------------


def test_cli_schema_prints_json_and_yaml_offline():
    family = "graph_transformer"
    as_json = CliRunner().invoke(trainctl, ["schema", family])
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.output) == family_schema(family)
    as_yaml = CliRunner().invoke(trainctl, ["schema", family, "--format", "yaml"])
    assert as_yaml.exit_code == 0, as_yaml.output
    assert yaml.safe_load(as_yaml.output) == family_schema(family)


def test_cli_schema_of_an_unknown_family_lists_the_families():
    result = CliRunner().invoke(trainctl, ["schema", "nope"])
    assert result.exit_code == 2
    assert "unknown family 'nope'; choose one of" in result.output
    assert "graphsage_skipgram" in result.output


# --- tagged YAML at POST /jobs ------------------------------------------------------------------

TAGGED = (
    "family: graphsage_skipgram\n"
    "name: tagged\n"
    "data: {format: planetoid, name: Cora}\n"
    "optimizer:\n"
    "  name: !pyobject torch.optim.Adam\n"
    "  lr: 0.01\n"
    "training:\n"
    "  epochs: !sweep [5, 10]\n"
)


def test_a_tagged_spec_is_422_naming_fields_lines_and_registries(client, auth, sessions):
    response = client.post(
        "/jobs", content=TAGGED, headers={**auth, "Content-Type": "application/yaml"}
    )
    assert response.status_code == 422, response.text
    optimizer, epochs = response.json()["detail"]
    assert (optimizer["loc"], optimizer["line"]) == ("optimizer.name", 5)
    assert optimizer["allowed"] == ["adam", "adamw", "sgd"]
    assert "YAML tag '!pyobject' is not allowed" in optimizer["msg"]
    assert (epochs["loc"], epochs["line"]) == ("training.epochs", 8)
    assert "POST /groups" in epochs["msg"]
    assert job_count(sessions) == 0


def test_a_python_tag_is_422_and_stores_nothing(client, auth, sessions, tmp_path):
    marker = tmp_path / "ran"
    body = (
        "family: graphsage_skipgram\n"
        "data: {format: planetoid, name: Cora}\n"
        f"name: !!python/object/apply:os.system ['touch {marker}']\n"
    )
    response = client.post(
        "/jobs", content=body, headers={**auth, "Content-Type": "application/yaml"}
    )
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"] == "name" and "'!!python/object/apply:os.system'" in error["msg"]
    assert job_count(sessions) == 0 and not marker.exists()
