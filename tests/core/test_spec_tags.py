"""YAML tags in a spec (`!pyobject`, `!!python/...`, the seed's `!sweep`, `!coupled-sweep`,
`!range`): refused before anything is built, each error naming the field, its line and, where
the family's schema lists them, the values the field allows."""

from __future__ import annotations

import pytest

from core.spec import SpecError, family_names, load_spec


def errors_of(text: str) -> list[dict]:
    with pytest.raises(SpecError) as err:
        load_spec(text)
    return err.value.errors


def test_a_pyobject_on_a_registry_field_lists_the_registry():
    (error,) = errors_of(
        "family: graphsage_skipgram\noptimizer:\n  name: !pyobject torch.optim.Adam\n"
    )
    assert (error["loc"], error["line"]) == ("optimizer.name", 3)
    assert error["allowed"] == ["adam", "adamw", "sgd"]
    assert error["msg"].startswith("line 3: YAML tag '!pyobject' is not allowed")
    assert "choose one of adam, adamw, sgd" in error["msg"]


def test_a_python_tag_is_shown_as_written():
    (error,) = errors_of("family: dt_gcnn\noptimizer:\n  name: !!python/name:torch.optim.Adam\n")
    assert error["loc"] == "optimizer.name"
    assert "YAML tag '!!python/name:torch.optim.Adam' is not allowed" in error["msg"]


def test_a_union_field_lists_every_variant():
    (error,) = errors_of("family: graphsage_skipgram\nscheduler:\n  name: !pyobject x.Cosine\n")
    assert error["allowed"] == ["none", "cosine", "step", "plateau", "linear_warmup", "onecycle"]


def test_every_tag_is_reported_at_once_in_lists_and_early_stopping_tasks():
    text = (
        "family: graphsage_skipgram\n"
        "name: tags\n"
        "early_stopping:\n"
        "  tasks:\n"
        "    - monitor: val_loss\n"
        "    - monitor: probe_val_acc\n"
        "      mode: !pyobject builtins.max\n"
        "  aggregate: !pyobject builtins.any\n"
        "model:\n"
        "  layers: !pyobject builtins.int\n"
        "  activation: !!python/name:torch.nn.ReLU\n"
    )
    errors = errors_of(text)
    assert [(e["loc"], e["line"]) for e in errors] == [
        ("early_stopping.tasks.1.mode", 7),
        ("early_stopping.aggregate", 8),
        ("model.layers", 10),
        ("model.activation", 11),
    ]
    assert errors[0]["allowed"] == ["min", "max"] and errors[1]["allowed"] == ["any", "all"]
    # A number: no list to offer, the rule instead.
    assert "allowed" not in errors[2]
    assert "values are plain names, numbers" in errors[2]["msg"]


def test_a_tag_on_a_section_names_its_fields():
    (error,) = errors_of("family: graphsage_skipgram\nmodel: !pyobject models.Sage\n")
    assert error["loc"] == "model"
    assert "write this section as a mapping of its fields (" in error["msg"]
    assert "hidden_dim" in error["msg"]


def test_a_tag_on_a_key_names_that_key():
    (error,) = errors_of("family: graphsage_skipgram\nmodel:\n  !pyobject layers: 2\n")
    assert (error["loc"], error["line"]) == ("model.layers", 3)


def test_without_a_known_family_the_rule_is_stated():
    (error,) = errors_of("family: nope\nmodel: !pyobject torch.nn.Linear\n")
    assert error["loc"] == "model" and "allowed" not in error
    assert "a spec names no Python objects" in error["msg"]


@pytest.mark.parametrize("tag", ["!sweep", "!coupled-sweep", "!range"])
def test_sweep_tags_point_to_job_groups(tag):
    text = f"family: graphsage_skipgram\ntraining:\n  seed: 1\n  epochs: {tag} [1, 5, 2]\n"
    (error,) = errors_of(text)
    assert (error["loc"], error["line"]) == ("training.epochs", 4)
    assert f"YAML tag '{tag}' is not allowed" in error["msg"]
    assert "POST /groups" in error["msg"]
    assert "sweep: {grid: {training.epochs: [v1, v2, ...]}}" in error["msg"]
    assert "trainctl sweep SPEC --grid training.epochs=v1,v2" in error["msg"]


def test_the_error_text_reads_field_then_line():
    with pytest.raises(SpecError) as err:
        load_spec("family: graphsage_skipgram\noptimizer:\n  name: !pyobject torch.optim.Adam\n")
    assert "optimizer.name: line 3: YAML tag '!pyobject' is not allowed" in str(err.value)


def test_nothing_is_constructed_for_a_python_tag(tmp_path):
    """A tag that would run code under an unsafe loader only produces an error."""
    marker = tmp_path / "ran"
    text = f"family: dt_gcnn\nname: !!python/object/apply:os.system ['touch {marker}']\n"
    (error,) = errors_of(text)
    assert error["loc"] == "name" and not marker.exists()


@pytest.mark.skipif("composed_gnn" not in family_names(), reason="composed_gnn not registered")
def test_a_composed_layer_tag_lists_the_layer_registry():
    text = (
        "family: composed_gnn\n"
        "model:\n"
        "  encoder:\n"
        "    - layer: sage\n"
        "      out: 64\n"
        "    - layer: !pyobject torch_geometric.nn.SAGEConv\n"
        "      out: 64\n"
    )
    (error,) = errors_of(text)
    assert (error["loc"], error["line"]) == ("model.encoder.1.layer", 6)
    assert {"sage", "gcn", "gin"} <= set(error["allowed"])


def test_many_tags_get_a_short_answer():
    text = "family: dt_gcnn\n" + "".join(f"k{i}: !pyobject x\n" for i in range(500))
    errors = errors_of(text)
    assert len(errors) == 21 and errors[-1]["msg"] == "480 more YAML tags; a spec has none"
