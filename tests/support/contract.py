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


CONTRACT_SPECS: dict[str, Any] = {
    "graphsage_skipgram": _graphsage,
    "graph_transformer": _graph_transformer,
}


def contract_spec(family: str, epochs: int = 2) -> dict[str, Any]:
    """The family's contract spec with `training.epochs = epochs`."""
    spec = CONTRACT_SPECS[family]()
    spec["training"] = {**spec.get("training", {}), "epochs": epochs}
    spec.setdefault("checkpoint", {})["every_n_epochs"] = 1
    return spec
