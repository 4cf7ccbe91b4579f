"""The tiny spec each registered family trains in the contract test
(`tests/families/test_contract.py`). A new family adds one entry here.

Each spec trains in a few seconds on a CPU, uses SGD and no dropout (so two gloo ranks match
one process to rounding), and a global batch that divides by 2.
"""

from __future__ import annotations

from typing import Any

from tests.support.graphs import tiny_gt
from tests.support.specs import tiny_cora


def _graphsage() -> dict[str, Any]:
    return tiny_cora(training={"batch_size": 2048}, optimizer={"name": "sgd", "lr": 0.5})


def _graph_transformer() -> dict[str, Any]:
    return tiny_gt(
        # 94 training graphs: an even count, so two ranks need no padding.
        data={
            "format": "tu",
            "name": "MUTAG",
            "split": {"kind": "fractions", "fractions": [0.5, 0.25, 0.25]},
        },
        # layer_norm: BatchNorm statistics are per rank on CPU (no SyncBatchNorm there).
        model={"layers": 1, "channels": 16, "heads": 2, "norm": "layer_norm"},
        positional_encodings=[{"kind": "rwse", "walk_lengths": [4], "dim": 4}],
        training={"batch_size": 32},
        optimizer={"name": "sgd", "lr": 0.05},
    )


def _denoising_vae() -> dict[str, Any]:
    return {
        "family": "denoising_vae",
        "name": "contract-vae",
        # mite, fold 0 of 5: 50 training sites (an even count: two ranks need no padding).
        "data": {
            "format": "species_matrix",
            "path": "mite/mite.csv",
            "id_column": "sample",
            "split": {"kind": "kfold", "k": 5, "fold": 0, "val_fraction": 0.1},
        },
        "model": {"hidden_dim": 16, "hidden_layers": 2, "latent_dim": 4},
        "noise": {"kind": "masking", "rate": 0.2},
        "kl_anneal_steps": 8,
        "training": {"batch_size": 10, "seed": 3},
        "optimizer": {"name": "sgd", "lr": 0.01},
    }


def _dt_gcnn() -> dict[str, Any]:
    # 118 training triplets from the first 300 SICK pairs: an even count, so two ranks need no
    # padding. Corpus scope: every rank runs the GCN (and its batch norm) over all training
    # texts, so batch statistics and the kNN graph, rebuilt every epoch, agree across ranks.
    return {
        "family": "dt_gcnn",
        "name": "tiny-dt-gcnn",
        "data": {
            "format": "sick",
            "max_pairs": 300,
            "triplets": {"negative_max_score": 3.5, "random_negatives": 1},
        },
        "features": {"name": "tfidf_svd", "dim": 32},
        "model": {"gcn_layers": 1, "hidden_dims": [16], "out_dim": 8, "dropout": 0.0,
                  "graph_mix_init": 0.5},
        "graph": {"k": 4, "min_similarity": 0.0, "rebuild_every_n_epochs": 1, "scope": "corpus"},
        "mining": {"strategy": "none"},
        "training": {"batch_size": 32, "seed": 3},
        "optimizer": {"name": "sgd", "lr": 0.1},
    }  # fmt: skip


def _composed_gnn() -> dict[str, Any]:
    # MUTAG, fractions 0.5/0.25/0.25: 94 training graphs (an even count: two ranks need no
    # padding). layer_norm, not batch_norm: BatchNorm statistics are per rank on CPU. Two heads
    # on the label (cross-entropy and binary logits) so the loss has two parts.
    return {
        "family": "composed_gnn",
        "name": "contract-composed-gnn",
        "task": "graph_classification",
        "data": {"format": "tu", "name": "MUTAG",
                 "split": {"kind": "fractions", "fractions": [0.5, 0.25, 0.25]}},
        "model": {
            "encoder": [
                {"layer": "gcn", "out": 16},
                {"layer": "layer_norm"},
                {"layer": "relu"},
                {"layer": "gine", "out": 16, "skip": True},
            ],
            "pooling": {"ops": ["mean", "max"], "combine": "cat"},
            "graph_features": {"features": ["num_nodes", "density"], "dims": [8]},
            "heads": [
                {"name": "label", "dims": [16]},
                {"name": "binary", "loss": "bce_logits", "weight": 0.5},
            ],
        },
        "training": {"batch_size": 32, "seed": 3},
        "optimizer": {"name": "sgd", "lr": 0.05},
    }  # fmt: skip


CONTRACT_SPECS: dict[str, Any] = {
    "graphsage_skipgram": _graphsage,
    "graph_transformer": _graph_transformer,
    "denoising_vae": _denoising_vae,
    "dt_gcnn": _dt_gcnn,
    "composed_gnn": _composed_gnn,
}


def contract_spec(family: str, epochs: int = 2) -> dict[str, Any]:
    """The family's contract spec with `training.epochs = epochs`."""
    spec = CONTRACT_SPECS[family]()
    spec["training"] = {**spec.get("training", {}), "epochs": epochs}
    spec.setdefault("checkpoint", {})["every_n_epochs"] = 1
    return spec
