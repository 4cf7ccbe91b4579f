"""ZINC 12k (the benchmarking-gnns subset) built from SMILES with RDKit, offline.

Source: `<root>/ZINC/graphium_ZINC_bench_gnn/smiles_score.csv` (columns SMILES, SA, logp,
score) and `indexes_train_val_test.csv` (the benchmarking-gnns 10k/1k/1k split).

Target: the `score` column, which is logP - SA exactly, NOT normalised and without the cycle
term. PyG's `ZINC(subset=True).y` is a differently scaled target, so MAEs from this loader are
not directly comparable with numbers reported on PyG's `ZINC` (see shared/data/SOURCES.md).

Node types follow the 28-token atom vocabulary of benchmarking-gnns (`ATOM_VOCAB`); a token is
the element symbol, then ` H<n>` and ` +`/` -` when the atom would be written as a bracket atom
in a Kekulé SMILES (charged or chiral atoms), which is how that vocabulary was built: `[nH]`
(pyrrole N, plain `N` in Kekulé form) is `N`, `[C@@H]` is `C H1`, `[NH3+]` is `N H3 +`. A token
outside the vocabulary falls back to its bare element symbol when that is in the vocabulary
(counted and logged); an element outside it is an error. Edge types: single=1, double=2,
triple=3 after kekulisation (0 is benchmarking-gnns' unused "no bond"), so `num_edge_types` = 4.

The processed set is cached under `cache_dir()/zinc/` keyed by a hash of the source files, the
row selection, the processing version and the RDKit version.
"""

from __future__ import annotations

import csv
import logging
from collections import Counter
from pathlib import Path

import torch

from core.data.graphset import GraphSet, files_digest, ptr_from_counts
from core.data.roots import cache_dir, resolve_data_path
from core.spec.data import ZincData

log = logging.getLogger(__name__)

PROCESSING_VERSION = 1
SUBSET_DIR = "ZINC/graphium_ZINC_bench_gnn"
FULL_DIR = "ZINC/full"  # same layout; not shipped with the shared data
SMILES_FILE = "smiles_score.csv"
INDEX_FILE = "indexes_train_val_test.csv"

# benchmarking-gnns `atom_dict` of ZINC: token -> index is the position here.
ATOM_VOCAB: tuple[str, ...] = (
    "C", "O", "N", "F", "C H1", "S", "Cl", "O -", "N H1 +", "Br",
    "N H3 +", "N H2 +", "N +", "N -", "S -", "I", "P", "O H1 +", "N H1 -", "O +",
    "S +", "P H1", "P H2", "C H2 -", "P +", "S H1 +", "C H1 -", "P H1 +",
)  # fmt: skip
ATOM_INDEX: dict[str, int] = {t: i for i, t in enumerate(ATOM_VOCAB)}
NUM_ATOM_TYPES = len(ATOM_VOCAB)  # 28
BOND_INDEX: dict[str, int] = {"SINGLE": 1, "DOUBLE": 2, "TRIPLE": 3}
NUM_BOND_TYPES = 4  # 0 = no bond (unused), as in benchmarking-gnns


def atom_token(atom: object) -> str:
    """The benchmarking-gnns token of an RDKit atom of a kekulised molecule."""
    from rdkit import Chem

    symbol = atom.GetSymbol()  # type: ignore[attr-defined]
    charge = atom.GetFormalCharge()  # type: ignore[attr-defined]
    bracket = charge != 0 or atom.GetChiralTag() != Chem.ChiralType.CHI_UNSPECIFIED  # type: ignore[attr-defined]
    token = symbol
    if bracket:
        hydrogens = atom.GetTotalNumHs()  # type: ignore[attr-defined]
        if hydrogens:
            token += f" H{hydrogens}"
    if charge:
        token += " " + ("+" if charge > 0 else "-") * abs(charge)
    return token


def smiles_to_graph(
    smiles: str, unknown: Counter[str] | None = None
) -> tuple[list[int], list[int], list[int], list[int]]:
    """(atom types, bond begin atoms, bond end atoms, bond types) of one molecule; each bond
    once. Raises ValueError for unparsable SMILES or elements outside the vocabulary."""
    from rdkit import Chem

    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise ValueError(f"RDKit cannot parse SMILES {smiles!r}")
    Chem.Kekulize(mol, clearAromaticFlags=True)
    types = []
    for atom in mol.GetAtoms():
        token = atom_token(atom)
        index = ATOM_INDEX.get(token)
        if index is None:
            index = ATOM_INDEX.get(atom.GetSymbol())
            if index is None:
                raise ValueError(
                    f"atom {token!r} in {smiles!r} is outside the ZINC vocabulary "
                    f"({', '.join(ATOM_VOCAB)})"
                )
            if unknown is not None:
                unknown[token] += 1
        types.append(index)
    begin, end, bonds = [], [], []
    for bond in mol.GetBonds():
        kind = str(bond.GetBondType())
        if kind not in BOND_INDEX:
            raise ValueError(f"bond type {kind} in {smiles!r} after kekulisation")
        begin.append(bond.GetBeginAtomIdx())
        end.append(bond.GetEndAtomIdx())
        bonds.append(BOND_INDEX[kind])
    return types, begin, end, bonds


def _read_sources(directory: Path) -> tuple[list[str], torch.Tensor, dict[str, torch.Tensor]]:
    with open(directory / SMILES_FILE, newline="") as fh:
        rows = list(csv.DictReader(fh))
    missing = {"SMILES", "score"} - set(rows[0] if rows else {})
    if missing:
        raise ValueError(f"{directory / SMILES_FILE}: missing columns {sorted(missing)}")
    smiles = [r["SMILES"] for r in rows]
    score = torch.tensor([float(r["score"]) for r in rows], dtype=torch.float32)
    with open(directory / INDEX_FILE, newline="") as fh:
        reader = csv.DictReader(fh)
        columns: dict[str, list[int]] = {name: [] for name in reader.fieldnames or []}
        for r in reader:
            for name, value in r.items():
                if value not in (None, ""):
                    columns[name].append(int(value))
    if set(columns) != {"train", "val", "test"}:
        raise ValueError(f"{directory / INDEX_FILE}: columns must be train,val,test")
    return smiles, score, {k: torch.tensor(v, dtype=torch.long) for k, v in columns.items()}


def _select(splits: dict[str, torch.Tensor], max_graphs: int | None) -> dict[str, torch.Tensor]:
    """The first rows of each split, in proportion to its size, `max_graphs` in all."""
    if max_graphs is None:
        return splits
    total = sum(int(v.numel()) for v in splits.values())
    return {
        name: rows[: max(1, max_graphs * rows.numel() // total)] for name, rows in splits.items()
    }


def load_zinc(spec: ZincData) -> tuple[GraphSet, str]:
    """The ZINC graphs with their own train/val/test split (`GraphSet.splits`), and the cache
    key of the processed set."""
    import rdkit

    directory = resolve_data_path(SUBSET_DIR if spec.subset else FULL_DIR, expect=SMILES_FILE)
    key = files_digest(
        [directory / SMILES_FILE, directory / INDEX_FILE],
        PROCESSING_VERSION,
        spec.max_graphs,
        rdkit.__version__,
    )
    path = cache_dir() / "zinc" / f"{'subset' if spec.subset else 'full'}-{key}.pt"
    if path.exists():
        log.info("ZINC from cache %s", path)
        return GraphSet.load(path), key
    graphs = _process(directory, spec.max_graphs)
    graphs.save(path)
    log.info("ZINC processed: %d graphs, cached at %s", graphs.num_graphs, path)
    return graphs, key


def _process(directory: Path, max_graphs: int | None) -> GraphSet:
    from rdkit import RDLogger

    RDLogger.DisableLog("rdApp.*")
    smiles, score, splits = _read_sources(directory)
    splits = _select(splits, max_graphs)
    rows = torch.cat([splits["train"], splits["val"], splits["test"]])
    unknown: Counter[str] = Counter()
    atoms: list[int] = []
    begin: list[int] = []
    end: list[int] = []
    bonds: list[int] = []
    n_atoms: list[int] = []
    n_bonds: list[int] = []
    for row in rows.tolist():  # one RDKit parse per molecule, once
        t, b, e, k = smiles_to_graph(smiles[row], unknown)
        atoms += t
        begin += b
        end += e
        bonds += k
        n_atoms.append(len(t))
        n_bonds.append(len(k))
    if unknown:
        log.warning("ZINC: tokens outside the vocabulary mapped to their element: %s", unknown)
    src, dst = torch.tensor(begin), torch.tensor(end)
    bond = torch.tensor(bonds)
    # Both directions of every bond, side by side: [2, 2 * B], grouped by molecule.
    edge_index = torch.stack([torch.stack([src, dst], 1), torch.stack([dst, src], 1)], 1)
    edge_index = edge_index.reshape(-1, 2).t().contiguous()
    edge_attr = bond.repeat_interleave(2)
    sizes = {k: v.numel() for k, v in splits.items()}
    offsets = torch.tensor([0, sizes["train"], sizes["train"] + sizes["val"]])
    return GraphSet(
        x=torch.tensor(atoms, dtype=torch.long),
        edge_index=edge_index,
        edge_attr=edge_attr,
        y=score[rows],
        node_ptr=ptr_from_counts(torch.tensor(n_atoms)),
        edge_ptr=ptr_from_counts(2 * torch.tensor(n_bonds)),
        graph_ids=rows,
        num_node_types=NUM_ATOM_TYPES,
        num_edge_types=NUM_BOND_TYPES,
        splits={
            name: torch.arange(sizes[name]) + offsets[i]
            for i, name in enumerate(("train", "val", "test"))
        },
    )


__all__ = ["ATOM_VOCAB", "NUM_ATOM_TYPES", "NUM_BOND_TYPES", "atom_token", "load_zinc",
           "smiles_to_graph"]  # fmt: skip
