"""The denoising VAE family: the seed's parameter count, its loss against hand-worked values,
both data formats giving one matrix, bad inputs named by file/line/column, the masked-presence
metric, resume (also to a larger epoch budget), a train/val-only split, the outputs, and the
mite example well above the species-frequency baseline."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from core.data.tables import TableError, read_table
from core.families.denoising_vae.model import VariationalAutoencoder
from core.families.denoising_vae.spec import DenoisingVaeSpec
from core.families.denoising_vae.task import hide_presences, load_species, masked_auc
from core.modelinfo import count_parameters
from core.spec import SpecError, load_spec
from tests.support.specs import metric_rows, stopped_and_resumed

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MITE = {"format": "species_matrix", "path": "mite/mite.csv", "id_column": "sample"}
EBIRD = ("SAMPLING EVENT IDENTIFIER", "SCIENTIFIC NAME", "OBSERVATION COUNT")


def tiny_vae(**sections: Any) -> dict[str, Any]:
    """A small denoising_vae spec on mite (70 sites) that trains in well under a second per
    epoch."""
    spec: dict[str, Any] = {
        "family": "denoising_vae",
        "name": "tiny-vae",
        "data": {**MITE, "split": {"kind": "kfold", "k": 5, "fold": 0, "val_fraction": 0.1}},
        "model": {"hidden_dim": 32, "hidden_layers": 2, "latent_dim": 4},
        "noise": {"kind": "masking", "rate": 0.2},
        "kl_anneal_steps": 10,
        "training": {"epochs": 3, "batch_size": 16, "seed": 5, "tensorboard": False},
        "optimizer": {"name": "adam", "lr": 0.003},
        "resources": {"threads": 1},  # more threads only spin on a shared 2-core box
    }
    for key, value in sections.items():
        merge = isinstance(value, dict) and key not in ("data", "noise")
        spec[key] = {**spec.get(key, {}), **value} if merge else value
    return spec


@pytest.fixture
def roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data root of generated files in front of the configured one (the shared tables)."""
    shared = os.environ.get("TRAINCTL_DATA_ROOT") or str(
        Path(__file__).resolve().parents[3] / "shared" / "data"
    )
    gen = tmp_path / "generated"
    gen.mkdir()
    monkeypatch.setenv("TRAINCTL_DATA_ROOT", f"{gen}{os.pathsep}{shared}")
    return gen


def _data(**fields: Any) -> Any:
    spec = DenoisingVaeSpec.model_validate({"family": "denoising_vae", "data": fields})
    return spec.data


# --- model ----------------------------------------------------------------------------------------


def test_the_seed_sizes_have_exactly_1554931_parameters():
    model = VariationalAutoencoder(467, hidden_dim=512, hidden_layers=3, latent_dim=16)
    assert count_parameters(model) == 1_554_931
    names = [name for name, _ in model.named_children()]
    assert names == [
        "encoder_network",
        "latent_mean_layer",
        "latent_log_variance_layer",
        "decoder_network",
    ]


def test_the_loss_against_hand_worked_values():
    logits = torch.zeros(3, 5)  # p = 0.5 everywhere: BCE = ln 2 per species
    target = torch.tensor([[1.0, 0, 0, 1, 0]] * 3)
    mean, log_var = torch.zeros(3, 2), torch.zeros(3, 2)
    out = VariationalAutoencoder.loss(logits, target, mean, log_var, kl_weight=0.5)
    assert float(out["recon_loss"]) == pytest.approx(5 * math.log(2))
    assert float(out["kl_loss"]) == pytest.approx(0.0)
    mean = torch.ones(3, 2)  # KL = 0.5 * sum(mu^2) = 1 per site
    out = VariationalAutoencoder.loss(logits, target, mean, log_var, kl_weight=0.5)
    assert float(out["kl_loss"]) == pytest.approx(1.0)
    assert float(out["loss"]) == pytest.approx(5 * math.log(2) + 0.5)


def test_evaluation_decodes_the_latent_mean():
    torch.manual_seed(0)
    model = VariationalAutoencoder(6, hidden_dim=8, hidden_layers=2, latent_dim=3).eval()
    x = torch.rand(4, 6)
    a, mean, _ = model(x)
    torch.testing.assert_close(a, model.decode(mean))
    torch.testing.assert_close(model(x)[0], a)  # no sampling: the same twice


# --- data -----------------------------------------------------------------------------------------


def _melt_mite(root: Path, name: str = "mite_records.tsv") -> str:
    """mite as eBird-like records: one row per (sample, species) with a count > 0, the first
    of each species' records written as "X"; returns its name under the generated root."""
    table = read_table("mite/mite.csv", id_column="sample")
    site, species = np.nonzero(table.values > 0)
    counts = table.values[site, species].astype(int).astype(str)
    _, first = np.unique(species, return_index=True)
    counts[first] = "X"
    names = np.asarray(table.columns)[species]
    rows = np.stack([table.ids[site], names, counts, np.full(site.size, "note")], 1)
    rng = np.random.default_rng(0)
    rows = rows[rng.permutation(len(rows))]  # records come in any order
    with open(root / name, "w", newline="") as fh:
        writer = csv.writer(fh, delimiter="\t")
        writer.writerow([*EBIRD, "SPECIES COMMENTS"])
        writer.writerows(rows.tolist())
    return name


def test_records_and_the_species_matrix_give_the_same_matrix(roots):
    wide = load_species(_data(**MITE))
    long = load_species(_data(format="records", path=_melt_mite(roots)))
    assert wide.presence.shape == long.presence.shape == (70, 35)
    rows = np.argsort(long.site_ids.astype(int))
    cols = np.argsort(long.species)[np.argsort(np.argsort(wide.species))]
    np.testing.assert_array_equal(long.site_ids[rows], wide.site_ids)
    np.testing.assert_array_equal(long.species[cols], wide.species)
    np.testing.assert_array_equal(long.presence[rows][:, cols], wide.presence)
    assert set(np.unique(wide.presence)) <= {0.0, 1.0}


def test_threshold_rare_species_and_max_rows(roots):
    above = load_species(_data(**MITE, presence_threshold=10, min_species_observations=5))
    counts = read_table("mite/mite.csv", id_column="sample").values
    kept = ((counts > 10).sum(0) >= 5).sum()
    assert above.presence.shape == (70, kept) and above.dropped_species == 35 - kept
    assert any("dropped" in w for w in above.warnings)
    name = _melt_mite(roots)
    part = load_species(_data(format="records", path=name, max_rows=100))
    assert part.presence.sum() <= 100 and any("max_rows" in w for w in part.warnings)


@pytest.mark.parametrize(
    ("text", "fields", "words"),
    [
        ("sample,a,b\n1,3,0\n2,two,1\n", {"id_column": "sample"},
         ["bad.csv, line 3, column 'a'", "'two' is not a finite number"]),
        ("sample,a,b\n1,3,0\n2,1,-1\n", {"id_column": "sample"},
         ["bad.csv, line 3, column 'b'", "negative value -1", "counts or cover values >= 0"]),
        ("sample,a,b\n1,3,0\n2,1,0\n", {"id_column": "sample", "min_species_observations": 3},
         ["bad.csv, column 'a'", "no species column is left", "min_species_observations <= 2"]),
        ("sample,a,b\n1,3,0\n", {"id_column": "site"}, ["line 1, column 'site'", "no id column"]),
    ],
)  # fmt: skip
def test_bad_matrices_name_file_line_and_column(roots, text, fields, words):
    (roots / "bad.csv").write_text(text)
    with pytest.raises(TableError) as err:
        load_species(_data(format="species_matrix", path="bad.csv", **fields))
    for word in words:
        assert word in str(err.value), str(err.value)


@pytest.mark.parametrize(
    ("text", "fields", "words"),
    [
        ("event\tname\tOBSERVATION COUNT\ne1\tA\t2\n", {"event_column": "event"},
         ["bad.tsv, line 1, column 'SCIENTIFIC NAME'", "has no species column"]),
        ("event\tname\tn\ne1\tA\t2\ne1\tB\tmany\n",
         {"event_column": "event", "species_column": "name", "count_column": "n"},
         ["bad.tsv, line 3, column 'n'", "'many' is not a finite number", "'X' for present"]),
        ("event\tname\tn\ne1\tA\t-2\n",
         {"event_column": "event", "species_column": "name", "count_column": "n"},
         ["bad.tsv, line 2, column 'n'", "negative count -2"]),
        ("event\tname\tn\ne1\t\t2\n",
         {"event_column": "event", "species_column": "name", "count_column": "n"},
         ["bad.tsv, line 2, column 'name'", "an empty cell"]),
    ],
)  # fmt: skip
def test_bad_records_name_file_line_and_column(roots, text, fields, words):
    (roots / "bad.tsv").write_text(text)
    with pytest.raises(TableError) as err:
        load_species(_data(format="records", path="bad.tsv", **fields))
    for word in words:
        assert word in str(err.value), str(err.value)


def test_spec_rules():
    with pytest.raises(SpecError, match="validation fraction above 0"):
        load_spec(
            tiny_vae(data={**MITE, "split": {"kind": "fractions", "fractions": [0.8, 0, 0.2]}})
        )
    with pytest.raises(SpecError, match="must differ"):
        load_spec(tiny_vae(data={"format": "records", "path": "r.tsv", "count_column": EBIRD[1]}))
    with pytest.raises(SpecError) as err:
        load_spec(tiny_vae(noise={"kind": "dropout"}))
    assert err.value.errors[0]["allowed"] == ["gaussian", "masking"]
    for override in (
        "kl_weight=.nan",
        "data.presence_threshold=.inf",
        "training.epochs=1000000000",
    ):
        with pytest.raises(SpecError):
            load_spec(tiny_vae(), [override])
    with pytest.raises(SpecError, match="relative to the data root"):
        load_spec(tiny_vae(data={**MITE, "path": "/etc/passwd"}))


# --- the quality metric ---------------------------------------------------------------------------


def test_hide_presences_hides_a_fixed_fifth_of_each_sites_presences():
    x = (torch.rand(50, 30, generator=torch.Generator().manual_seed(1)) < 0.4).float()
    hidden = hide_presences(x, 0.2, seed=3)
    assert not (hidden & (x == 0)).any()
    torch.testing.assert_close(hidden.sum(1).float(), torch.floor(x.sum(1) * 0.2 + 0.5))
    assert torch.equal(hidden, hide_presences(x, 0.2, seed=3))
    assert not torch.equal(hidden, hide_presences(x, 0.2, seed=4))


def test_masked_auc_against_a_hand_worked_value():
    scores = torch.tensor([[0.9, 0.2, 0.5, 0.7]])
    hidden = torch.tensor([[True, False, False, False]])
    candidates = torch.tensor([[True, True, True, False]])  # the 4th was a visible presence
    assert masked_auc(scores, hidden, candidates) == pytest.approx(1.0)
    scores = torch.tensor([[0.4, 0.2, 0.5, 0.7]])  # above one of the two absences
    assert masked_auc(scores, hidden, candidates) == pytest.approx(0.5)
    assert math.isnan(masked_auc(scores, hidden & False, candidates))


# --- training -------------------------------------------------------------------------------------


def _task(tmp_path: Path, **sections: Any) -> Any:
    from core.families.denoising_vae.task import DenoisingVaeTask
    from core.task import RunContext

    spec = load_spec(tiny_vae(**sections))
    task = DenoisingVaeTask(RunContext(spec, tmp_path, torch.device("cpu")))
    task.setup_data()
    return task


@pytest.mark.parametrize(
    "noise",
    [
        {"kind": "gaussian", "std": 0.0},
        {"kind": "gaussian", "std": 0.1},
        {"kind": "masking", "rate": 0.3},
    ],
)
def test_noise_is_drawn_per_epoch_and_batch_and_only_for_training(tmp_path, noise):
    task = _task(tmp_path, noise=noise)
    first = list(task.train_batches(1))
    again = list(task.train_batches(1))
    assert len(first) == len(task.train_batches(1)) == 4  # 50 training sites, batches of 16
    for (x, target, eps), (x2, _, eps2) in zip(first, again, strict=True):
        assert torch.equal(x, x2) and torch.equal(eps, eps2)  # a function of (seed, epoch, batch)
        assert set(target.unique().tolist()) <= {0.0, 1.0}
        if noise["kind"] == "masking":
            assert ((x == target) | (x == 0)).all() and not torch.equal(x, target)
        elif noise["std"] == 0:
            assert torch.equal(x, target)  # a plain VAE
        else:
            assert (x - target).std() == pytest.approx(0.1, rel=0.2)
    other = list(task.train_batches(2))
    assert not torch.equal(first[0][2], other[0][2])


def test_kl_annealing_rises_per_step(tmp_path):
    task = _task(tmp_path, kl_weight=0.5, kl_anneal_steps=10)
    weights = []
    for step in (0, 5, 10, 50):
        task.global_step = step
        weights.append(task.kl_weight())
    assert weights == pytest.approx([0.0, 0.25, 0.5, 0.5])


def test_resume_equals_the_uninterrupted_run(tmp_path, gt_env, one_thread):
    full, part = stopped_and_resumed(tiny_vae(checkpoint={"every_n_epochs": 1}), tmp_path)
    a = [r for r in metric_rows(full) if r.get("granularity", "epoch") == "epoch"]
    b = [r for r in metric_rows(part) if r.get("granularity", "epoch") == "epoch"]
    assert [r["epoch"] for r in b] == [1, 2, 3]
    for x, y in zip(a, b, strict=True):
        for key in ("train_loss", "train_recon_loss", "train_kl_loss", "val_masked_auc"):
            assert y[key] == pytest.approx(x[key], rel=1e-5), key


def test_resuming_with_a_larger_epoch_budget_continues(tmp_path, gt_env, one_thread):
    from core.run import train

    full, part = tmp_path / "full", tmp_path / "part"
    train(load_spec(tiny_vae(), ["training.epochs=4"]), full)
    train(load_spec(tiny_vae(), ["training.epochs=2"]), part)
    summary = train(
        load_spec(tiny_vae(), ["training.epochs=4"]), part, resume=str(part / "checkpoints/last.pt")
    )
    assert summary["epochs_completed"] == 4
    rows = [r for r in metric_rows(part) if r.get("granularity", "epoch") == "epoch"]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    expected = [r["train_loss"] for r in metric_rows(full)]
    assert [r["train_loss"] for r in rows] == pytest.approx(expected, rel=1e-5)


def test_a_train_val_split_skips_test_metrics_and_writes_every_output(tmp_path, gt_env, one_thread):
    from core.run import train

    split = {"kind": "fractions", "fractions": [0.8, 0.2, 0.0]}
    run = tmp_path / "run"
    summary = train(load_spec(tiny_vae(data={**MITE, "split": split})), run)
    assert "skipped" in summary["test_metrics"]
    assert not any(k.startswith("test_") for k in summary["best_metrics"])
    quality = summary["quality"]
    assert quality["metric"] == "masked_auc" and quality["split"] == "val"
    assert 0 <= quality["value"] <= 1 and 0 <= quality["baseline"] <= 1
    assert summary["data"]["test_sites"] == 0 and summary["data"]["val_sites"] == 14
    row = metric_rows(run)[-1]
    for key in ("train_loss", "train_recon_loss", "train_kl_loss", "val_loss", "val_recon_loss",
                "val_kl_loss", "val_masked_auc"):  # fmt: skip
        assert math.isfinite(row[key]), key
    # Outputs: embeddings of every site, keyed by site ids with their split.
    embeddings = np.load(run / "embeddings.npy")
    assert embeddings.shape == (70, 4) and embeddings.dtype == np.float32
    with open(run / "site_ids.csv") as fh:
        sites = list(csv.DictReader(fh))
    assert [s["site_id"] for s in sites[:3]] == ["1", "2", "3"]
    assert {s["split"] for s in sites} == {"train", "val"}
    assert np.load(run / "reconstruction.npy").shape == (70, 35)
    with open(run / "species.csv") as fh:
        species = list(csv.DictReader(fh))
    assert species[0]["name"] == "Brachy" and 0 < float(species[0]["prevalence"]) <= 1
    with open(run / "predictions.csv") as fh:
        predictions = list(csv.DictReader(fh))
    assert len(predictions) == quality["masked_cells"] > 0
    assert {p["split"] for p in predictions} == {"val"}
    assert all(1 <= int(p["rank"]) <= int(p["candidates"]) for p in predictions)
    assert (run / "plots" / "training_curves.png").stat().st_size > 0
    stored = json.loads((run / "summary.json").read_text())
    assert stored["model"]["parameters"] == count_parameters(
        VariationalAutoencoder(35, hidden_dim=32, hidden_layers=2, latent_dim=4)
    )


@pytest.mark.parametrize("example", ["mite-vae.yaml", "dune-vae.yaml", "mite-records-vae.yaml"])
def test_the_examples_are_valid_specs(example):
    spec = load_spec(EXAMPLES / example)
    assert isinstance(spec, DenoisingVaeSpec) and spec.early_stopping is None


def test_the_mite_example_beats_the_frequency_baseline_quickly(tmp_path, gt_env, one_thread):
    from core.run import train

    quick = ["training.epochs=30", "training.tensorboard=false", "resources.threads=1"]
    spec = load_spec(EXAMPLES / "mite-vae.yaml", quick)
    quality = train(spec, tmp_path / "run")["quality"]
    assert quality["split"] == "test"
    assert quality["value"] > quality["baseline"] + 0.05, quality


@pytest.mark.slow
@pytest.mark.parametrize(("example", "goal"), [("mite-vae.yaml", 0.88), ("dune-vae.yaml", 0.80)])
def test_the_examples_reach_their_targets_over_five_folds(example, goal, tmp_path, gt_env,
                                                          one_thread):  # fmt: skip
    from core.run import train

    values, baselines = [], []
    for fold in range(5):
        spec = load_spec(EXAMPLES / example, [f"data.split.fold={fold}", "resources.threads=1"])
        quality = train(spec, tmp_path / f"fold{fold}")["quality"]
        values.append(quality["value"])
        baselines.append(quality["baseline"])
    assert np.mean(values) >= goal, (values, baselines)
    assert np.mean(values) > np.mean(baselines)
