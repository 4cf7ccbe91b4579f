"""Write SICK's sentences as labelled texts (a TSV with the columns `text`, `label`, `split`)
for the `labeled_texts` example: a label is a paraphrase cluster, a connected component of the
graph whose edges are SICK's pairs judged ENTAILMENT or scoring at least `--min-score`
relatedness; clusters smaller than `--min-size` are left out. Whole clusters go to train / val /
test (seeded, by `--fractions`), so the test classes are never seen in training (the usual
metric-learning protocol):

    python examples/sick_labeled_texts.py --out "$GENERATED_ROOT/generated/sick_labeled.tsv"

`GENERATED_ROOT` is a writable directory listed in `TRAINCTL_DATA_ROOT` (e.g.
`TRAINCTL_DATA_ROOT=$GENERATED_ROOT:/path/to/shared/data`); SICK is read from the data root.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from core.data.texts import load_sick
from core.spec.texts import SickData

SPLIT_NAMES = np.array(["train", "val", "test"])


def sick_clusters(
    min_score: float = 4.0,
    min_size: int = 3,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`(texts [N], labels [N], splits [N])` str arrays: SICK's sentences in paraphrase clusters
    of at least `min_size`, each cluster's label `c<number>` and split."""
    corpus = load_sick(SickData(format="sick"), seed)
    assert corpus.pairs is not None and corpus.scores is not None and corpus.entailed is not None
    n = corpus.num_texts
    edges = corpus.pairs[corpus.entailed | (corpus.scores >= min_score)].numpy()  # [E, 2]
    graph = sp.coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    _, component = connected_components(graph, directed=False)  # [n]
    sizes = np.bincount(component)
    keep = sizes[component] >= min_size  # [n]
    clusters = np.unique(component[keep])
    rng = np.random.default_rng(seed)
    order = rng.permutation(clusters.size)
    bounds = np.floor(np.cumsum(fractions)[:2] * clusters.size).astype(int)
    cluster_split = np.zeros(clusters.size, dtype=int)
    cluster_split[order[bounds[0] : bounds[1]]] = 1
    cluster_split[order[bounds[1] :]] = 2
    index = np.searchsorted(clusters, component[keep])
    labels = np.char.add("c", np.char.zfill(index.astype(str), 4))
    return corpus.texts[keep], labels, SPLIT_NAMES[cluster_split[index]]


def write_tsv(path: Path, texts: np.ndarray, labels: np.ndarray, splits: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh, delimiter="\t", quoting=csv.QUOTE_MINIMAL)
        writer.writerow(["text", "label", "split"])
        writer.writerows(zip(texts, labels, splits, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--min-score", type=float, default=4.0)
    parser.add_argument("--min-size", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    texts, labels, splits = sick_clusters(args.min_score, args.min_size, seed=args.seed)
    write_tsv(args.out, texts, labels, splits)
    counts = {str(s): int((splits == s).sum()) for s in SPLIT_NAMES}
    print(f"{args.out}: {len(texts)} texts in {np.unique(labels).size} clusters, {counts}")


if __name__ == "__main__":
    main()
