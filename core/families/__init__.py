"""The model families: a closed registry from a spec's `family` to its Task class."""

from __future__ import annotations

from core.registry import Registry
from core.task import Task


def _families() -> Registry[type[Task]]:
    from core.families.graph_transformer import GraphTransformerTask
    from core.families.graphsage_skipgram import GraphSageSkipGramTask

    return Registry(
        "family",
        {"graphsage_skipgram": GraphSageSkipGramTask, "graph_transformer": GraphTransformerTask},
    )


def get_task_class(family: str) -> type[Task]:
    """The Task class of `family`; a ValueError lists the families there are."""
    return _families().get(family)
