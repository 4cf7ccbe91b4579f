"""DT-GCNN triplet text embeddings over a dynamic kNN graph (seed 002): spec, task, model."""

from core.families import Family
from core.families.dt_gcnn.spec import DtGcnnSpec

FAMILY = Family("dt_gcnn", DtGcnnSpec, "DtGcnnTask")
