"""Graph Transformer (GPS) with multi-scale positional encodings (seed 001): spec, task, model."""

from core.families import Family
from core.families.graph_transformer.spec import GraphTransformerSpec

FAMILY = Family("graph_transformer", GraphTransformerSpec, "GraphTransformerTask")
