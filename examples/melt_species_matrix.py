"""Write a site x species table as eBird-like observation records (a TSV with the columns
`SAMPLING EVENT IDENTIFIER`, `SCIENTIFIC NAME`, `OBSERVATION COUNT`, one row per species with a
count above 0 at a site), for the `format: records` example:

    python examples/melt_species_matrix.py mite/mite.csv --id-column sample \\
        --out "$GENERATED_ROOT/generated/mite_records.tsv"

`GENERATED_ROOT` is a writable directory listed in `TRAINCTL_DATA_ROOT` (e.g.
`TRAINCTL_DATA_ROOT=$GENERATED_ROOT:/path/to/shared/data`); the source table is read from the
data root.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from core.data.tables import read_table

COLUMNS = ("SAMPLING EVENT IDENTIFIER", "SCIENTIFIC NAME", "OBSERVATION COUNT")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("table", help="the wide table, relative to the data root")
    parser.add_argument("--id-column", default=None)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    table = read_table(args.table, args.id_column, nonnegative=True)
    site, species = np.nonzero(table.values > 0)  # row-major: site by site
    counts = table.values[site, species]
    rows = np.stack(
        [table.ids[site], np.asarray(table.columns)[species], np.char.mod("%g", counts)], 1
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as fh:
        writer = csv.writer(fh, delimiter="\t")
        writer.writerow(COLUMNS)
        writer.writerows(rows.tolist())
    print(f"wrote {len(rows)} records of {len(table.ids)} sites to {args.out}")


if __name__ == "__main__":
    main()
