"""What a model is: parameter counts and size, reported by every family in the log and in
`summary.json` (the seed's model summary)."""

from __future__ import annotations

from typing import Any

from torch import nn


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """The number of scalar parameters (of those that train, with `trainable_only`)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def model_summary(model: nn.Module) -> dict[str, Any]:
    """`{"class", "parameters", "trainable", "megabytes", "layers"}`: `megabytes` is the size
    of parameters and buffers (10^6 bytes); `layers` lists the direct children with their
    parameter counts."""
    size = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    return {
        "class": type(model).__name__,
        "parameters": count_parameters(model),
        "trainable": count_parameters(model, trainable_only=True),
        "megabytes": round(size / 1e6, 3),
        "layers": [
            {"name": name, "class": type(child).__name__, "parameters": count_parameters(child)}
            for name, child in model.named_children()
        ],
    }
