"""The model families: one package per family under `core/families/`, one line each below.

A family's package `__init__` (torch-free) defines `FAMILY = Family(...)`: its name, its spec
model (`spec.py`) and the name of its Task class in `task.py`. The spec union
(`core.spec.load_spec`), the family names and `get_task_class` all derive from this registry;
`tests/families/test_contract.py` fails if a package is missing from it or registered twice.
See `docs/adding-a-family.md`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.spec.common import BaseJobSpec
    from core.task import Task

# The registry: the packages under core/families/, one line per family.
FAMILY_PACKAGES: tuple[str, ...] = (
    "graphsage_skipgram",
    "graph_transformer",
    "denoising_vae",
    "dt_gcnn",
    "composed_gnn",
)


@dataclass(frozen=True)
class Family:
    """A registered family: its `name` (the spec's `family` value and the package name), its
    spec model, and its Task class name in `core.families.<name>.task` (imported on demand, so
    reading the registry never imports torch)."""

    name: str
    spec: type[BaseJobSpec]
    task: str

    def task_class(self) -> type[Task]:
        module = importlib.import_module(f"core.families.{self.name}.task")
        return getattr(module, self.task)


@cache
def families() -> dict[str, Family]:
    """Every registered family by name; TypeError if the registry disagrees with itself."""
    found: dict[str, Family] = {}
    for package in FAMILY_PACKAGES:
        family = importlib.import_module(f"core.families.{package}").FAMILY
        if not isinstance(family, Family):
            raise TypeError(f"core.families.{package}.FAMILY is not a Family")
        if family.name != package or family.spec.family_name() != package:
            raise TypeError(
                f"core.families.{package}: FAMILY.name {family.name!r} and its spec's family "
                f"{family.spec.family_name()!r} must both be {package!r}"
            )
        if package in found:
            raise TypeError(f"family {package!r} is registered twice")
        found[package] = family
    return found


def get_task_class(family: str) -> type[Task]:
    """The Task class of `family`; a ValueError lists the families there are."""
    try:
        entry = families()[family]
    except KeyError:
        raise ValueError(
            f"unknown family {family!r}; choose one of {', '.join(families())}"
        ) from None
    return entry.task_class()
