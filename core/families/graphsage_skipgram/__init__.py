"""GraphSAGE + skip-gram node embeddings (seed 000): spec, task, model, random walks."""

from core.families import Family
from core.families.graphsage_skipgram.spec import GraphSageSkipGramSpec

FAMILY = Family("graphsage_skipgram", GraphSageSkipGramSpec, "GraphSageSkipGramTask")
