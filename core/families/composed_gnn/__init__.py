"""Config-composed GNN (seed 003, QuantumGrav): layers, pooling, graph features and heads
from the spec, with per-head evaluators (`core.evaluators`)."""

from core.families import Family
from core.families.composed_gnn.spec import ComposedGnnSpec

FAMILY = Family("composed_gnn", ComposedGnnSpec, "ComposedGnnTask")
