"""Site x species presence matrices, from a wide table of counts or cover values or from a long
table of observation records (eBird-like checklists: one row per species seen on a sampling
event, the count "X" when the species was present but not counted).

Values above a presence threshold become 1, the rest 0; species seen at fewer than
`min_species_observations` sites are dropped. Everything is vectorised with numpy (no loop over
rows, sites or species).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from core.data.errors import DataWarnings
from core.data.tables import Columns, Table, TableError, to_numbers

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpeciesMatrix:
    """`presence[i, j]` is 1 when species `species[j]` is present at site `site_ids[i]`."""

    file: str
    site_ids: np.ndarray  # str [sites]
    species: np.ndarray  # str [species]
    presence: np.ndarray  # float32 [sites, species], values in {0, 1}
    dropped_species: int  # species removed by min_species_observations
    warnings: list[str]

    @property
    def prevalence(self) -> np.ndarray:
        """float64 [species]: the fraction of sites where each species is present."""
        return self.presence.mean(0, dtype=np.float64)


def first_seen_codes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values in order of first appearance, and each item's index into them."""
    uniq, first, inverse = np.unique(values, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return uniq[order], rank[inverse.reshape(-1)]


def from_table(table: Table, presence_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """`(species, presence)` of a wide table (rows = sites): values above the threshold."""
    dup = np.unique(np.asarray(table.columns), return_counts=True)
    if (dup[1] > 1).any():
        raise TableError(
            table.file,
            "a species column is repeated",
            line=1,
            column=str(dup[0][dup[1] > 1][0]),
            allowed="unique species names",
        )
    return np.asarray(table.columns, dtype=str), table.values > presence_threshold


def from_records(
    records: Columns,
    event_column: str,
    species_column: str,
    count_column: str,
    present_value: str,
    presence_threshold: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`(site_ids, species, presence)` of observation records: counts summed per (event,
    species), present above the threshold or when any record has `present_value`. Events and
    species are in order of first appearance; an event whose records are all zero counts is a
    site with no species."""
    file, lines = records.file, records.lines
    events = records.columns[event_column]
    names = records.columns[species_column]
    cells = records.columns[count_column]
    for column, values in ((event_column, events), (species_column, names)):
        empty = np.flatnonzero(values == "")
        if empty.size:
            raise TableError(
                file,
                "an empty cell",
                line=int(lines[empty[0]]),
                column=column,
                allowed="a non-empty event id and species name in every record",
            )
    present = cells == present_value
    allowed = f"counts >= 0, or {present_value!r} for present but not counted"
    counts = np.zeros(cells.shape[0], dtype=np.float64)
    counted = ~present
    if counted.any():
        counts[counted] = to_numbers(
            cells[counted][:, None], file, [count_column], lines[counted], allowed
        )[:, 0]
    negative = np.flatnonzero(counts < 0)
    if negative.size:
        i = int(negative[0])
        raise TableError(
            file,
            f"negative count {cells[i]}",
            line=int(lines[i]),
            column=count_column,
            allowed=allowed,
        )
    site_ids, event_code = first_seen_codes(events)
    species, species_code = first_seen_codes(names)
    cell = event_code * species.size + species_code  # [records] flat (site, species) index
    size = site_ids.size * species.size
    summed = np.bincount(cell, weights=counts, minlength=size)
    marked = np.bincount(cell, weights=present.astype(np.float64), minlength=size) > 0
    presence = ((summed > presence_threshold) | marked).reshape(site_ids.size, species.size)
    return site_ids, species, presence


def species_matrix(
    file: str,
    site_ids: np.ndarray,
    species: np.ndarray,
    presence: np.ndarray,
    min_species_observations: int,
    warnings: DataWarnings | None = None,
) -> SpeciesMatrix:
    """The matrix with species present at fewer than `min_species_observations` sites dropped;
    a TableError naming the most observed species when none is left."""
    warnings = warnings if warnings is not None else DataWarnings()
    observed = presence.sum(0)  # [species] sites where present
    keep = observed >= min_species_observations
    if not keep.any():
        best = int(np.argmax(observed)) if observed.size else None
        detail = (
            f"; the most observed, {species[best]!r}, is present at {int(observed[best])} sites"
            if best is not None
            else ""
        )
        raise TableError(
            file,
            f"no species column is left after data.min_species_observations="
            f"{min_species_observations}{detail}",
            column=None if best is None else str(species[best]),
            allowed=f"data.min_species_observations <= {int(observed.max(initial=0))}",
        )
    dropped = int((~keep).sum())
    if dropped:
        warnings.add(
            file,
            f"dropped {dropped} of {species.size} species present at fewer than "
            f"{min_species_observations} sites (data.min_species_observations)",
        )
    matrix = presence[:, keep].astype(np.float32)
    empty = int((matrix.sum(1) == 0).sum())
    if empty:
        warnings.add(file, f"{empty} of {matrix.shape[0]} sites have no species present")
    log.info(
        "%s: %d sites x %d species, %.1f%% present",
        file,
        matrix.shape[0],
        matrix.shape[1],
        100.0 * float(matrix.mean()),
    )
    return SpeciesMatrix(file, site_ids, species[keep], matrix, dropped, list(warnings.items))


__all__ = ["SpeciesMatrix", "first_seen_codes", "from_records", "from_table", "species_matrix"]
